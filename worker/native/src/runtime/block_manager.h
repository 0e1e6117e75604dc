// Paged KV cache bookkeeping: fixed-size blocks per KV group, free lists, per-sequence block tables, ref-counted
// blocks shared through prefix caching, and release of sliding-window blocks that no query can read any more.
//
// Prefix caching: every full block of a sequence's tokens gets a chained hash (the parent block's hash and the
// block's token ids), registered in each group when the block's KV is complete. A later sequence whose leading blocks
// hash the same attaches those blocks instead of computing them. A cached block whose refcount drops to 0 stays in the
// cache (reusable) until allocation needs it back, least recently released first.
//
// The sliding group only keeps blocks that intersect the window, so a prefix hit at position P needs the full group's
// blocks [0, P) but the sliding group's blocks only for positions [P - window + 1, P): the window the first computed
// token will read. The hit length is the longest P for which both are cached.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "model/forward.h"

namespace ms {

// A sequence's blocks. Owned by the sequence, changed only through BlockManager.
struct SeqBlocks {
    std::vector<int32_t> table[kNumKvGroups];  // block ids by block index; -1 = not held (sliding, out of window)
    std::vector<uint64_t> hashes;              // chained hashes of the leading full blocks already registered
    int sliding_released = 0;                  // sliding blocks [0, sliding_released) are not held
    bool empty() const { return table[0].empty() && table[1].empty(); }
};

struct BlockGroupStats {
    int total = 0;
    int used = 0;         // refcount > 0
    int cached_free = 0;  // refcount 0, still holding a cached prefix block (evictable)
    int free = 0;         // refcount 0, holding nothing
};

class BlockManager {
  public:
    struct Config {
        int block_size = 16;
        int num_blocks[kNumKvGroups] = {0, 0};  // 0 = the group is not used by the model
        int sliding_window = 0;                 // tokens a sliding-group query sees (itself included)
        bool prefix_caching = true;
    };

    explicit BlockManager(const Config &config);

    int block_size() const { return cfg_.block_size; }
    bool group_enabled(int g) const { return cfg_.num_blocks[g] > 0; }
    const Config &config() const { return cfg_; }

    // Attaches the longest cached prefix of tokens[0, n_tokens) to `seq` (which holds no blocks), leaving at least one
    // token to compute. Returns the number of tokens covered (a multiple of the block size).
    int attach_cached_prefix(const int32_t *tokens, int n_tokens, SeqBlocks &seq);

    // Makes positions [start, end) writable, where `start` is the sequence's computed length. Either allocates every
    // block needed or, when the pool cannot supply them, changes nothing and returns false.
    bool allocate(SeqBlocks &seq, int start, int end);
    // Blocks `allocate` would take for that range (0 where already held).
    int blocks_to_allocate(const SeqBlocks &seq, int start, int end, int group) const;

    // Positions [0, n_computed) now hold KV computed from tokens[0, n_computed): registers newly completed full blocks
    // in the prefix cache and releases sliding blocks that no later query can read.
    void commit(SeqBlocks &seq, const int32_t *tokens, int n_computed);

    // Drops every block of `seq` (cached ones stay reusable). Tail blocks are released first so that they are evicted
    // before the shared head of a prefix.
    void release(SeqBlocks &seq);

    // Most blocks of `group` one sequence can hold at once when its positions reach `n_positions` and it is computed
    // in chunks of at most `max_chunk` tokens.
    int peak_blocks(int n_positions, int max_chunk, int group) const;

    BlockGroupStats stats(int group) const;
    int available(int group) const;  // free + cached_free
    int total_blocks(int group) const { return cfg_.num_blocks[group]; }  // constant: safe from any thread

    // Throws ms::Error(MS_ERR_INTERNAL) naming the broken invariant. With `seqs`, also checks that every block's
    // refcount equals the number of table entries that reference it.
    void check_invariants(const std::vector<const SeqBlocks *> *seqs = nullptr) const;

  private:
    struct Pool {
        int n = 0;
        std::vector<int32_t> ref;
        std::vector<uint8_t> hashed;
        std::vector<uint64_t> hash, parent;  // of a hashed block
        std::vector<int32_t> tokens;         // [n][block_size]: the token ids a hashed block was computed from
        std::vector<int32_t> free_stack;     // ref 0, not hashed
        std::vector<int32_t> lru_prev, lru_next;  // ref 0 and hashed: a list, oldest first
        int lru_head = -1, lru_tail = -1, lru_size = 0;
        int used = 0;
        std::unordered_map<uint64_t, int32_t> by_hash;
    };

    int32_t take(Pool &p);
    void add_ref(Pool &p, int32_t b);
    void drop_ref(Pool &p, int32_t b);
    void lru_push(Pool &p, int32_t b);
    void lru_remove(Pool &p, int32_t b);
    // The cached block of `p` for hash h with the given parent and tokens, or -1.
    int32_t lookup(const Pool &p, uint64_t h, uint64_t parent, const int32_t *tokens) const;
    int first_sliding_block(int pos) const;  // first block a query at `pos` reads in the sliding group

    Config cfg_;
    Pool pools_[kNumKvGroups];
};

uint64_t hash_block(uint64_t parent, const int32_t *tokens, int n);
constexpr uint64_t kRootBlockHash = 0x6d6f64656c736572ULL;

}  // namespace ms
