// Text and SVG output of the simulator: where a policy missed the SLO, and replicas/queue over time.
import type { SimResult } from './simulator.js';

/** Clusters the arrivals that missed the SLO into bursts (gaps over 10 s split them) and lists the largest. */
export function burstReport(r: SimResult, sloS: number, top = 5): string {
  if (!r.missedArrivals.length) return `${r.policy}: every request met the ${sloS} s TTFT target`;
  const bursts: { start: number; end: number; missed: number }[] = [];
  for (const t of r.missedArrivals) {
    const last = bursts[bursts.length - 1];
    if (last && t - last.end <= 10) {
      last.end = t;
      last.missed++;
    } else bursts.push({ start: t, end: t, missed: 1 });
  }
  const worst = [...bursts].sort((a, b) => b.missed - a.missed).slice(0, top);
  const lines = worst.map((b) => {
    const before = r.timeline.filter((p) => p.t <= b.start).pop();
    return `  t=${b.start.toFixed(0)}-${b.end.toFixed(0)} s: ${b.missed} missed; ${before?.ready ?? 0} ready replicas when it began`;
  });
  return `${r.policy}: ${r.missedArrivals.length} requests missed the ${sloS} s target in ${bursts.length} bursts; largest:\n${lines.join('\n')}`;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

function svg(r: SimResult, width = 1100, height = 220): string {
  const tl = r.timeline;
  if (!tl.length) return '';
  const tMax = tl[tl.length - 1]!.t || 1;
  const repMax = Math.max(1, ...tl.map((p) => p.replicas));
  const qMax = Math.max(1, ...tl.map((p) => p.demand));
  const x = (t: number) => 50 + ((width - 100) * t) / tMax;
  const yR = (v: number) => height - 25 - ((height - 45) * v) / repMax;
  const yQ = (v: number) => height - 25 - ((height - 45) * v) / qMax;
  const line = (pts: [number, number][], color: string, stepped = false) => {
    let d = '';
    pts.forEach(([px, py], i) => {
      if (i === 0) d += `M${px.toFixed(1)},${py.toFixed(1)}`;
      else if (stepped) d += `H${px.toFixed(1)}V${py.toFixed(1)}`;
      else d += `L${px.toFixed(1)},${py.toFixed(1)}`;
    });
    return `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.2"/>`;
  };
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">
<text x="50" y="12">${esc(r.policy)}: attainment ${(100 * r.sloAttainment).toFixed(1)} %, ${r.gpuHours.toFixed(2)} GPU-h; replicas (blue, left, max ${repMax}), ready (green), demand = queue + in flight (grey, right, max ${qMax})</text>
<line x1="50" y1="${height - 25}" x2="${width - 50}" y2="${height - 25}" stroke="#999"/>
<text x="50" y="${height - 8}">0 s</text><text x="${width - 90}" y="${height - 8}">${tMax.toFixed(0)} s</text>
${line(
  tl.map((p) => [x(p.t), yQ(p.demand)]),
  '#aaa',
)}
${line(
  tl.map((p) => [x(p.t), yR(p.ready)]),
  '#2a2',
  true,
)}
${line(
  tl.map((p) => [x(p.t), yR(p.replicas)]),
  '#22c',
  true,
)}
</svg>`;
}

export function plotHtml(title: string, results: SimResult[]): string {
  return `<!doctype html><meta charset="utf-8"><title>${esc(title)}</title><h3>${esc(title)}</h3>\n${results.map((r) => svg(r)).join('\n<br>\n')}\n`;
}
