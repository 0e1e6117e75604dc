#include "runtime/block_manager.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "common/error.h"

namespace ms {

namespace {
inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

[[noreturn]] void broken(const std::string &what) { throw Error(MS_ERR_INTERNAL, "block manager invariant: " + what); }
}  // namespace

uint64_t hash_block(uint64_t parent, const int32_t *tokens, int n) {
    uint64_t h = mix64(parent ^ 0x9e3779b97f4a7c15ULL);
    for (int i = 0; i < n; ++i) h = mix64(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(tokens[i])) + 0x632be59bd9b4e019ULL * (i + 1)));
    return h;
}

BlockManager::BlockManager(const Config &config) : cfg_(config) {
    if (cfg_.block_size <= 0) throw Error(MS_ERR_INVALID_ARGUMENT, "kv_block_size must be positive");
    if (cfg_.num_blocks[kFullGroup] <= 0) throw Error(MS_ERR_INVALID_ARGUMENT, "the full-attention KV group has no blocks");
    for (int g = 0; g < kNumKvGroups; ++g) {
        Pool &p = pools_[g];
        p.n = cfg_.num_blocks[g];
        p.ref.assign(p.n, 0);
        p.hashed.assign(p.n, 0);
        p.hash.assign(p.n, 0);
        p.parent.assign(p.n, 0);
        if (cfg_.prefix_caching) p.tokens.assign(static_cast<size_t>(p.n) * cfg_.block_size, 0);
        p.lru_prev.assign(p.n, -1);
        p.lru_next.assign(p.n, -1);
        p.free_stack.reserve(p.n);
        // Lowest ids on top of the stack: allocation order is easy to follow in tests.
        for (int b = p.n - 1; b >= 0; --b) p.free_stack.push_back(b);
    }
}

int BlockManager::first_sliding_block(int pos) const {
    const int first_pos = std::max(0, pos - cfg_.sliding_window + 1);
    return first_pos / cfg_.block_size;
}

void BlockManager::lru_push(Pool &p, int32_t b) {
    p.lru_prev[b] = p.lru_tail;
    p.lru_next[b] = -1;
    if (p.lru_tail >= 0) p.lru_next[p.lru_tail] = b; else p.lru_head = b;
    p.lru_tail = b;
    ++p.lru_size;
}

void BlockManager::lru_remove(Pool &p, int32_t b) {
    const int32_t prev = p.lru_prev[b], next = p.lru_next[b];
    if (prev >= 0) p.lru_next[prev] = next; else p.lru_head = next;
    if (next >= 0) p.lru_prev[next] = prev; else p.lru_tail = prev;
    p.lru_prev[b] = p.lru_next[b] = -1;
    --p.lru_size;
}

int32_t BlockManager::take(Pool &p) {
    int32_t b;
    if (!p.free_stack.empty()) {
        b = p.free_stack.back();
        p.free_stack.pop_back();
    } else if (p.lru_head >= 0) {
        b = p.lru_head;  // evict the least recently released cached block
        lru_remove(p, b);
        p.by_hash.erase(p.hash[b]);
        p.hashed[b] = 0;
    } else {
        broken("take() on an empty pool");
    }
    p.ref[b] = 1;
    ++p.used;
    return b;
}

void BlockManager::add_ref(Pool &p, int32_t b) {
    if (p.ref[b] == 0) {
        if (!p.hashed[b]) broken("attaching a free block that holds no cached prefix");
        lru_remove(p, b);
        ++p.used;
    }
    ++p.ref[b];
}

void BlockManager::drop_ref(Pool &p, int32_t b) {
    if (p.ref[b] <= 0) broken("refcount of block " + std::to_string(b) + " would go negative");
    if (--p.ref[b] == 0) {
        --p.used;
        if (p.hashed[b]) lru_push(p, b); else p.free_stack.push_back(b);
    }
}

int32_t BlockManager::lookup(const Pool &p, uint64_t h, uint64_t parent, const int32_t *tokens) const {
    auto it = p.by_hash.find(h);
    if (it == p.by_hash.end()) return -1;
    const int32_t b = it->second;
    // Compare the content too: a 64-bit hash collision must not hand a sequence someone else's KV.
    if (p.parent[b] != parent) return -1;
    if (std::memcmp(&p.tokens[static_cast<size_t>(b) * cfg_.block_size], tokens, sizeof(int32_t) * cfg_.block_size) != 0) return -1;
    return b;
}

int BlockManager::attach_cached_prefix(const int32_t *tokens, int n_tokens, SeqBlocks &seq) {
    if (!seq.empty()) broken("attach_cached_prefix on a sequence that holds blocks");
    if (!cfg_.prefix_caching || n_tokens <= 1) return 0;
    const int bs = cfg_.block_size;
    const int max_blocks = (n_tokens - 1) / bs;  // leave at least one token to compute (its logits are needed)
    std::vector<uint64_t> hashes;
    std::vector<int32_t> full_blocks;
    uint64_t parent = kRootBlockHash;
    const Pool &full = pools_[kFullGroup];
    for (int i = 0; i < max_blocks; ++i) {
        const uint64_t h = hash_block(parent, tokens + static_cast<size_t>(i) * bs, bs);
        const int32_t b = lookup(full, h, parent, tokens + static_cast<size_t>(i) * bs);
        if (b < 0) break;
        hashes.push_back(h);
        full_blocks.push_back(b);
        parent = h;
    }
    int hit = static_cast<int>(hashes.size());
    std::vector<int32_t> sliding_blocks;
    int lo = 0;
    if (group_enabled(kSlidingGroup)) {
        const Pool &sl = pools_[kSlidingGroup];
        for (; hit > 0; --hit) {
            lo = first_sliding_block(hit * bs);
            sliding_blocks.assign(hit, -1);
            bool ok = true;
            for (int i = lo; i < hit && ok; ++i) {
                const uint64_t par = i == 0 ? kRootBlockHash : hashes[i - 1];
                sliding_blocks[i] = lookup(sl, hashes[i], par, tokens + static_cast<size_t>(i) * bs);
                ok = sliding_blocks[i] >= 0;
            }
            if (ok) break;
        }
        if (hit == 0) lo = 0;
    }
    if (hit == 0) return 0;
    for (int i = 0; i < hit; ++i) {
        add_ref(pools_[kFullGroup], full_blocks[i]);
        seq.table[kFullGroup].push_back(full_blocks[i]);
    }
    if (group_enabled(kSlidingGroup)) {
        for (int i = 0; i < hit; ++i) {
            if (i >= lo) add_ref(pools_[kSlidingGroup], sliding_blocks[i]);
            seq.table[kSlidingGroup].push_back(i >= lo ? sliding_blocks[i] : -1);
        }
        seq.sliding_released = lo;
    }
    hashes.resize(hit);
    seq.hashes = std::move(hashes);
    return hit * bs;
}

int BlockManager::blocks_to_allocate(const SeqBlocks &seq, int start, int end, int group) const {
    if (!group_enabled(group) || end <= 0) return 0;
    const int bs = cfg_.block_size;
    const int want = (end + bs - 1) / bs;
    int from = static_cast<int>(seq.table[group].size());
    if (group == kSlidingGroup) from = std::max(from, first_sliding_block(start));
    return std::max(0, want - from);
}

bool BlockManager::allocate(SeqBlocks &seq, int start, int end) {
    int need[kNumKvGroups];
    for (int g = 0; g < kNumKvGroups; ++g) {
        need[g] = blocks_to_allocate(seq, start, end, g);
        if (need[g] > available(g)) return false;
    }
    const int want = (end + cfg_.block_size - 1) / cfg_.block_size;
    for (int g = 0; g < kNumKvGroups; ++g) {
        if (need[g] == 0) continue;
        auto &table = seq.table[g];
        // Sliding blocks before the window of `start` are never written: leave them unheld.
        while (static_cast<int>(table.size()) < want - need[g]) table.push_back(-1);
        for (int i = 0; i < need[g]; ++i) table.push_back(take(pools_[g]));
    }
    return true;
}

void BlockManager::commit(SeqBlocks &seq, const int32_t *tokens, int n_computed) {
    const int bs = cfg_.block_size;
    if (cfg_.prefix_caching) {
        const int full_blocks = n_computed / bs;
        uint64_t parent = seq.hashes.empty() ? kRootBlockHash : seq.hashes.back();
        for (int i = static_cast<int>(seq.hashes.size()); i < full_blocks; ++i) {
            const int32_t *blk = tokens + static_cast<size_t>(i) * bs;
            const uint64_t h = hash_block(parent, blk, bs);
            for (int g = 0; g < kNumKvGroups; ++g) {
                if (!group_enabled(g) || i >= static_cast<int>(seq.table[g].size())) continue;
                const int32_t b = seq.table[g][i];
                Pool &p = pools_[g];
                if (b < 0 || p.hashed[b] || p.by_hash.count(h)) continue;  // another sequence cached it first
                p.hashed[b] = 1;
                p.hash[b] = h;
                p.parent[b] = parent;
                std::memcpy(&p.tokens[static_cast<size_t>(b) * bs], blk, sizeof(int32_t) * bs);
                p.by_hash.emplace(h, b);
            }
            seq.hashes.push_back(h);
            parent = h;
        }
    }
    if (group_enabled(kSlidingGroup)) {
        // The next query is at position n_computed; it reads from n_computed - window + 1 on.
        const int keep_from = std::min(first_sliding_block(n_computed), static_cast<int>(seq.table[kSlidingGroup].size()));
        for (int i = seq.sliding_released; i < keep_from; ++i) {
            int32_t &b = seq.table[kSlidingGroup][i];
            if (b >= 0) drop_ref(pools_[kSlidingGroup], b);
            b = -1;
        }
        seq.sliding_released = std::max(seq.sliding_released, keep_from);
    }
}

void BlockManager::release(SeqBlocks &seq) {
    for (int g = 0; g < kNumKvGroups; ++g) {
        auto &table = seq.table[g];
        for (auto it = table.rbegin(); it != table.rend(); ++it)
            if (*it >= 0) drop_ref(pools_[g], *it);
        table.clear();
    }
    seq.hashes.clear();
    seq.sliding_released = 0;
}

int BlockManager::peak_blocks(int n_positions, int max_chunk, int group) const {
    if (!group_enabled(group) || n_positions <= 0) return 0;
    const int bs = cfg_.block_size;
    const int all = (n_positions + bs - 1) / bs;
    if (group == kFullGroup) return all;
    // A chunk [s, s + c) needs positions [s - window + 1, s + c): at most window - 1 + c positions, over one more block
    // than that span fills when it does not start on a block boundary.
    const int span = cfg_.sliding_window - 1 + std::max(1, max_chunk);
    return std::min(all, (span + bs - 1) / bs + 1);
}

int BlockManager::available(int group) const {
    const Pool &p = pools_[group];
    return static_cast<int>(p.free_stack.size()) + p.lru_size;
}

BlockGroupStats BlockManager::stats(int group) const {
    const Pool &p = pools_[group];
    BlockGroupStats s;
    s.total = p.n;
    s.used = p.used;
    s.cached_free = p.lru_size;
    s.free = static_cast<int>(p.free_stack.size());
    return s;
}

void BlockManager::check_invariants(const std::vector<const SeqBlocks *> *seqs) const {
    for (int g = 0; g < kNumKvGroups; ++g) {
        const Pool &p = pools_[g];
        const std::string grp = " (group " + std::to_string(g) + ")";
        int used = 0;
        for (int b = 0; b < p.n; ++b) {
            if (p.ref[b] < 0) broken("negative refcount" + grp);
            if (p.ref[b] > 0) ++used;
        }
        if (used != p.used) broken("used count " + std::to_string(p.used) + " != blocks with refs " + std::to_string(used) + grp);
        std::vector<uint8_t> seen(p.n, 0);
        for (int32_t b : p.free_stack) {
            if (p.ref[b] != 0 || p.hashed[b]) broken("free list holds a used or cached block" + grp);
            if (seen[b]++) broken("block twice in the free lists" + grp);
        }
        int lru = 0;
        for (int32_t b = p.lru_head; b >= 0; b = p.lru_next[b]) {
            if (p.ref[b] != 0 || !p.hashed[b]) broken("LRU holds a used or uncached block" + grp);
            if (seen[b]++) broken("block twice in the free lists" + grp);
            ++lru;
        }
        if (lru != p.lru_size) broken("LRU length mismatch" + grp);
        if (static_cast<int>(p.free_stack.size()) + p.lru_size + p.used != p.n) broken("blocks leaked: free + cached + used != total" + grp);
        for (const auto &kv : p.by_hash)
            if (!p.hashed[kv.second] || p.hash[kv.second] != kv.first) broken("hash index points at the wrong block" + grp);
        int hashed = 0;
        for (int b = 0; b < p.n; ++b) hashed += p.hashed[b];
        if (hashed != static_cast<int>(p.by_hash.size())) broken("cached blocks missing from the hash index" + grp);
        if (seqs) {
            std::vector<int> refs(p.n, 0);
            for (const SeqBlocks *s : *seqs)
                for (int32_t b : s->table[g])
                    if (b >= 0) ++refs[b];
            for (int b = 0; b < p.n; ++b)
                if (refs[b] != p.ref[b]) broken("block " + std::to_string(b) + " refcount " + std::to_string(p.ref[b]) + " but referenced " + std::to_string(refs[b]) + " times" + grp);
        }
    }
}

}  // namespace ms
