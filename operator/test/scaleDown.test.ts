import { deletionCostChanges, rankForRemoval, VICTIM_COST } from '../src/controller/scaleDown.js';
import { pod } from './fixtures.js';

describe('scale-down victims', () => {
  const pods = [
    pod('old-ready', { created: '2026-01-01T00:00:00Z' }),
    pod('new-ready', { created: '2026-01-03T00:00:00Z' }),
    pod('mid-not-ready', { created: '2026-01-02T00:00:00Z', ready: false }),
  ];

  it('ranks not-ready pods first, then the newest', () => {
    expect(rankForRemoval(pods).map((p) => p.metadata!.name)).toEqual(['mid-not-ready', 'new-ready', 'old-ready']);
  });

  it('marks exactly the pods to remove and clears stale marks', () => {
    expect(deletionCostChanges(pods, 1)).toEqual(
      new Map([
        ['mid-not-ready', VICTIM_COST],
        ['new-ready', VICTIM_COST],
      ]),
    );
    const marked = [
      pod('old-ready', {
        created: '2026-01-01T00:00:00Z',
        annotations: { 'controller.kubernetes.io/pod-deletion-cost': VICTIM_COST },
      }),
      pod('new-ready', { created: '2026-01-03T00:00:00Z' }),
    ];
    expect(deletionCostChanges(marked, 1)).toEqual(
      new Map<string, string | null>([
        ['new-ready', VICTIM_COST],
        ['old-ready', null],
      ]),
    );
    expect(deletionCostChanges(pods, 3).size).toBe(0);
  });
});
