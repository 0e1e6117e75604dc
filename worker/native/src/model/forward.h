// The boundary between the runtime (block manager, scheduler, step loop) and the model (weights, kernels, forward
// pass). The runtime owns the KV storage and decides what runs in a step; the model computes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ms {

// KV groups: layers whose KV lives and dies together. gpt-oss has two — full-attention layers (KV kept for the whole
// sequence) and sliding-window layers (only the last `sliding_window` positions are ever read, so the runtime frees
// their blocks once they fall out of the window). A model with one kind of layer uses group 0 only.
enum KvGroup : int { kFullGroup = 0, kSlidingGroup = 1, kNumKvGroups = 2 };

// Paged KV storage, allocated by the runtime from the model's KvSpec. A block of group g holds, for each layer of g,
// `block_size` consecutive positions of K and of V:
//   k[g] / v[g]: [num_blocks[g]][layers_in_group[g]][block_size][kv_dim]   (kv_dim = n_kv_heads * head_dim)
// Element type is fp32, or bf16 (uint16 bit patterns) when `bf16` is set.
struct KvStorage {
    int block_size = 16;
    int kv_dim = 0;
    bool bf16 = false;
    int num_blocks[kNumKvGroups] = {0, 0};
    int layers_in_group[kNumKvGroups] = {0, 0};
    void *k[kNumKvGroups] = {nullptr, nullptr};
    void *v[kNumKvGroups] = {nullptr, nullptr};
};

// What the model tells the runtime about its KV needs.
struct KvSpec {
    int kv_dim = 0;
    int sliding_window = 0;                 // 0 = no sliding layers
    std::vector<int> layer_group;           // per layer: kFullGroup or kSlidingGroup
    std::vector<int> layer_index_in_group;  // per layer: its index among the layers of its group
    int layers_in_group[kNumKvGroups] = {0, 0};
    // Bytes of one block of group g: 2 (K and V) * layers_in_group[g] * block_size * kv_dim * element size.
    size_t block_bytes(int group, int block_size, bool bf16) const {
        if (group < 0 || group >= kNumKvGroups) return 0;
        return size_t(2) * layers_in_group[group] * size_t(block_size) * kv_dim * (bf16 ? 2 : 4);
    }
};

// One sequence's share of a step: a chunk of new tokens (a prefill chunk, or one decode token) at positions
// [start_pos, start_pos + n_tokens). The block tables cover positions [0, start_pos + n_tokens) of each group:
// block_table[g][i] holds positions [i*block_size, (i+1)*block_size). In the sliding group, entries for blocks that
// lie entirely before (start_pos - sliding_window + 1) may be -1 (freed); the model never reads them.
struct ForwardSeq {
    const int32_t *tokens = nullptr;
    int n_tokens = 0;
    int start_pos = 0;
    const int32_t *block_table[kNumKvGroups] = {nullptr, nullptr};
    int n_blocks[kNumKvGroups] = {0, 0};
    bool want_logits = true; // logits of the chunk's last token (false for a prefill chunk that is not the last)
};

}  // namespace ms
