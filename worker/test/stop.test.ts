import { StopMatcher } from '../src/stop.js';

const feed = (stops: string[], pieces: string[]): { shown: string[]; stopped: boolean; rest: string } => {
  const m = new StopMatcher(stops);
  const shown: string[] = [];
  let stopped = false;
  for (const p of pieces) {
    const out = m.push(p);
    shown.push(out.text);
    if (out.stopped) {
      stopped = true;
      break;
    }
  }
  return { shown, stopped, rest: m.flush() };
};

describe('StopMatcher', () => {
  it('matches a stop string split across pieces and never shows part of it', () => {
    const out = feed(['END'], ['abc E', 'N', 'D tail']);
    expect(out.shown).toEqual(['abc ', '', '']);
    expect(out.stopped).toBe(true);
    expect(out.rest).toBe('');
  });

  it('releases held text once it cannot be a stop string', () => {
    const out = feed(['END'], ['abc E', 'x']);
    expect(out.shown).toEqual(['abc ', 'Ex']);
    expect(out.stopped).toBe(false);
  });

  it('flushes held text at the end of generation', () => {
    expect(feed(['END'], ['abc EN']).rest).toBe('EN');
  });

  it('stops at the earliest of several stop strings', () => {
    const out = feed(['xyz', 'b'], ['a b xyz']);
    expect(out.shown).toEqual(['a ']);
  });

  it('passes text through with no stop strings', () => {
    expect(feed([], ['a', 'b']).shown).toEqual(['a', 'b']);
  });
});
