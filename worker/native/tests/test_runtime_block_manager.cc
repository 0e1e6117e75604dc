// Block manager: allocation, refcounts, prefix-cache hits, LRU eviction of cached blocks, sliding-window release.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "common/error.h"
#include "runtime/block_manager.h"

namespace ms {
namespace {

BlockManager::Config config(int full, int sliding, int bs = 16, int window = 32, bool caching = true) {
    BlockManager::Config c;
    c.block_size = bs;
    c.num_blocks[kFullGroup] = full;
    c.num_blocks[kSlidingGroup] = sliding;
    c.sliding_window = window;
    c.prefix_caching = caching;
    return c;
}

std::vector<int32_t> iota_tokens(int n, int first = 1) {
    std::vector<int32_t> t(n);
    std::iota(t.begin(), t.end(), first);
    return t;
}

// Computes tokens [0, n) in chunks the way the scheduler would: allocate, then commit.
void compute(BlockManager &bm, SeqBlocks &s, const std::vector<int32_t> &tokens, int from, int n, int chunk) {
    for (int pos = from; pos < n; pos += chunk) {
        const int end = std::min(n, pos + chunk);
        ASSERT_TRUE(bm.allocate(s, pos, end));
        bm.commit(s, tokens.data(), end);
    }
}

TEST(RuntimeBlockManager, AllocatesAndFreesWithoutLeaks) {
    BlockManager bm(config(10, 10));
    SeqBlocks a, b;
    ASSERT_TRUE(bm.allocate(a, 0, 40));  // 3 blocks of 16
    EXPECT_EQ(a.table[kFullGroup].size(), 3u);
    EXPECT_EQ(bm.stats(kFullGroup).used, 3);
    ASSERT_TRUE(bm.allocate(b, 0, 16));
    EXPECT_EQ(bm.stats(kFullGroup).used, 4);
    std::vector<const SeqBlocks *> seqs{&a, &b};
    bm.check_invariants(&seqs);
    bm.release(a);
    bm.release(b);
    EXPECT_EQ(bm.stats(kFullGroup).used, 0);
    EXPECT_EQ(bm.stats(kFullGroup).free + bm.stats(kFullGroup).cached_free, 10);
    bm.check_invariants();
}

TEST(RuntimeBlockManager, FailedAllocationChangesNothing) {
    BlockManager bm(config(4, 4, 16, 1000));
    SeqBlocks a, b;
    ASSERT_TRUE(bm.allocate(a, 0, 48));
    EXPECT_FALSE(bm.allocate(b, 0, 32));  // needs 2, one left
    EXPECT_TRUE(b.empty());
    EXPECT_EQ(bm.stats(kFullGroup).used, 3);
    EXPECT_TRUE(bm.allocate(b, 0, 16));
    EXPECT_EQ(bm.available(kFullGroup), 0);
    bm.release(a);
    bm.release(b);
    bm.check_invariants();
}

TEST(RuntimeBlockManager, PrefixHitSharesBlocksAndLeavesOneTokenToCompute) {
    BlockManager bm(config(16, 16, 16, 1000));
    const auto tokens = iota_tokens(64);
    SeqBlocks a;
    compute(bm, a, tokens, 0, 48, 48);  // 3 full blocks cached
    SeqBlocks b;
    // 48 tokens: at most 2 blocks may come from the cache, the last token must be computed.
    EXPECT_EQ(bm.attach_cached_prefix(tokens.data(), 48, b), 32);
    SeqBlocks c;
    EXPECT_EQ(bm.attach_cached_prefix(tokens.data(), 49, c), 48);
    EXPECT_EQ(c.table[kFullGroup], std::vector<int32_t>(a.table[kFullGroup].begin(), a.table[kFullGroup].end()));
    std::vector<const SeqBlocks *> seqs{&a, &b, &c};
    bm.check_invariants(&seqs);  // block 0 and 1 have refcount 3, block 2 has 2
    EXPECT_EQ(bm.stats(kFullGroup).used, 3);
    // A different token in block 1 limits the hit to block 0.
    auto other = tokens;
    other[20] = 999;
    SeqBlocks d;
    EXPECT_EQ(bm.attach_cached_prefix(other.data(), 64, d), 16);
    for (SeqBlocks *s : {&a, &b, &c, &d}) bm.release(*s);
    EXPECT_EQ(bm.stats(kFullGroup).used, 0);
    EXPECT_EQ(bm.stats(kFullGroup).cached_free, 3);  // still reusable
    SeqBlocks e;
    EXPECT_EQ(bm.attach_cached_prefix(tokens.data(), 64, e), 48);
    bm.release(e);
    bm.check_invariants();
}

TEST(RuntimeBlockManager, NoCachingWhenDisabled) {
    BlockManager bm(config(16, 16, 16, 1000, false));
    const auto tokens = iota_tokens(64);
    SeqBlocks a;
    compute(bm, a, tokens, 0, 64, 64);
    SeqBlocks b;
    EXPECT_EQ(bm.attach_cached_prefix(tokens.data(), 64, b), 0);
    bm.release(a);
    EXPECT_EQ(bm.stats(kFullGroup).cached_free, 0);
    bm.check_invariants();
}

TEST(RuntimeBlockManager, CachedBlocksAreEvictedLeastRecentlyReleasedFirst) {
    BlockManager bm(config(4, 4, 16, 1000));
    const auto t1 = iota_tokens(33, 1), t2 = iota_tokens(33, 500);
    SeqBlocks a, b;
    compute(bm, a, t1, 0, 32, 32);
    compute(bm, b, t2, 0, 32, 32);
    bm.release(a);  // t1's blocks released first: oldest
    bm.release(b);
    EXPECT_EQ(bm.stats(kFullGroup).cached_free, 4);
    SeqBlocks c;
    ASSERT_TRUE(bm.allocate(c, 0, 16));  // evicts one block of t1 (its tail block, released first within a)
    SeqBlocks probe1, probe2;
    EXPECT_EQ(bm.attach_cached_prefix(t1.data(), 33, probe1), 16);  // t1's head survives
    EXPECT_EQ(bm.attach_cached_prefix(t2.data(), 33, probe2), 32);  // t2 untouched
    bm.release(probe1);
    bm.release(probe2);
    SeqBlocks d;
    ASSERT_TRUE(bm.allocate(d, 0, 48));  // takes the three remaining: all cached entries but none in use
    EXPECT_EQ(bm.stats(kFullGroup).cached_free, 0);
    SeqBlocks probe3;
    EXPECT_EQ(bm.attach_cached_prefix(t2.data(), 33, probe3), 0);
    std::vector<const SeqBlocks *> seqs{&c, &d, &probe3};
    bm.check_invariants(&seqs);
    bm.release(c);
    bm.release(d);
    bm.check_invariants();
    EXPECT_EQ(bm.stats(kFullGroup).used, 0);
}

TEST(RuntimeBlockManager, SlidingBlocksOutsideTheWindowAreReleased) {
    BlockManager bm(config(16, 16, 16, 32));
    const auto tokens = iota_tokens(100);
    SeqBlocks s;
    compute(bm, s, tokens, 0, 100, 10);
    // Next query at 100 reads positions 69..100: sliding blocks 4.. only.
    EXPECT_EQ(s.table[kFullGroup].size(), 7u);
    ASSERT_EQ(s.table[kSlidingGroup].size(), 7u);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(s.table[kSlidingGroup][i], -1) << i;
    for (int i = 4; i < 7; ++i) EXPECT_GE(s.table[kSlidingGroup][i], 0) << i;
    EXPECT_EQ(bm.stats(kSlidingGroup).used, 3);
    EXPECT_EQ(bm.stats(kFullGroup).used, 7);
    std::vector<const SeqBlocks *> seqs{&s};
    bm.check_invariants(&seqs);
    bm.release(s);
    bm.check_invariants();
}

TEST(RuntimeBlockManager, SlidingNeedsOnlyTheWindowOfTheChunk) {
    BlockManager bm(config(16, 16, 16, 32));
    SeqBlocks s;
    // A chunk starting at 80 reads from 49: sliding blocks 3..5 (positions 48..95) are written or read.
    ASSERT_TRUE(bm.allocate(s, 0, 80));
    const auto tokens = iota_tokens(96);
    bm.commit(s, tokens.data(), 80);
    EXPECT_EQ(bm.blocks_to_allocate(s, 80, 96, kSlidingGroup), 1);
    EXPECT_EQ(bm.stats(kSlidingGroup).used, 2);  // blocks 3 and 4 (positions 48..79) are kept
    bm.release(s);
    // A fresh sequence starting at position 80 (after a prefix hit) needs blocks 3..5 of the sliding group.
    SeqBlocks t;
    EXPECT_EQ(bm.blocks_to_allocate(t, 80, 96, kSlidingGroup), 3);
    EXPECT_EQ(bm.blocks_to_allocate(t, 80, 96, kFullGroup), 6);
}

TEST(RuntimeBlockManager, PrefixHitNeedsTheSlidingWindowBeforeTheHitPoint) {
    BlockManager bm(config(16, 8, 16, 32));
    const auto tokens = iota_tokens(101);
    SeqBlocks a;
    compute(bm, a, tokens, 0, 100, 10);
    bm.release(a);
    // Sliding blocks of indices 0..5 are full and cached; block 6 (positions 96..99) is partial, so it is plain free.
    EXPECT_EQ(bm.stats(kSlidingGroup).cached_free, 6);
    EXPECT_EQ(bm.stats(kSlidingGroup).free, 2);
    {
        SeqBlocks b;
        // 101 tokens: full hit of 6 blocks (96 tokens); the sliding window before 96 is positions 65..95: blocks 4, 5.
        EXPECT_EQ(bm.attach_cached_prefix(tokens.data(), 101, b), 96);
        for (int i = 0; i < 4; ++i) EXPECT_EQ(b.table[kSlidingGroup][i], -1);
        EXPECT_EQ(b.sliding_released, 4);
        bm.release(b);
    }
    // LRU order: 0,1,2,3 (released while computing), then 5,4 (tail first at release).
    SeqBlocks filler;
    ASSERT_TRUE(bm.allocate(filler, 0, 96));  // 6 sliding blocks: 2 plain free + evicts 0,1,2,3
    {
        SeqBlocks b;
        EXPECT_EQ(bm.attach_cached_prefix(tokens.data(), 101, b), 96);  // 4 and 5 still cached
        bm.release(b);
    }
    bm.release(filler);
    SeqBlocks filler2;
    ASSERT_TRUE(bm.allocate(filler2, 0, 112));  // 7 blocks: 6 plain free + evicts 5
    {
        SeqBlocks b;
        // The full group still has the prefix but no hit point has its sliding window cached.
        EXPECT_EQ(bm.attach_cached_prefix(tokens.data(), 101, b), 0);
        EXPECT_TRUE(b.empty());
    }
    bm.release(filler2);
    bm.check_invariants();
    EXPECT_EQ(bm.stats(kFullGroup).used, 0);
    EXPECT_EQ(bm.stats(kSlidingGroup).used, 0);
}

TEST(RuntimeBlockManager, PeakBlocksBoundsWhatASequenceHolds) {
    BlockManager bm(config(64, 64, 16, 32));
    EXPECT_EQ(bm.peak_blocks(1000, 64, kFullGroup), 63);
    // window 32 + chunk 64 - 1 = 95 positions over at most 7 blocks.
    EXPECT_EQ(bm.peak_blocks(1000, 64, kSlidingGroup), 7);
    EXPECT_EQ(bm.peak_blocks(20, 64, kSlidingGroup), 2);
    const auto tokens = iota_tokens(1000);
    SeqBlocks s;
    int peak = 0;
    for (int pos = 0; pos < 1000; pos += 64) {
        const int end = std::min(1000, pos + 64);
        ASSERT_TRUE(bm.allocate(s, pos, end));
        peak = std::max(peak, bm.stats(kSlidingGroup).used);
        bm.commit(s, tokens.data(), end);
    }
    EXPECT_LE(peak, bm.peak_blocks(1000, 64, kSlidingGroup));
    bm.release(s);
}

}  // namespace
}  // namespace ms
