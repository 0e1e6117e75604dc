// A self-contained HTML page with two SVG scatter plots: TTFT and ITL (ms) against time since the run started.
export interface Point {
  t: number;
  v: number;
}

function scatter(title: string, points: readonly Point[], color: string): string {
  const W = 900;
  const H = 300;
  const pad = 50;
  const maxT = Math.max(1e-9, ...points.map((p) => p.t));
  const sorted = points.map((p) => p.v).sort((a, b) => a - b);
  // Clip the y axis at p99.5 so one outlier does not flatten the picture.
  const maxV = Math.max(1e-9, sorted[Math.floor(sorted.length * 0.995)] ?? 0, ...sorted.slice(0, 1));
  const x = (t: number): number => pad + ((W - 2 * pad) * t) / maxT;
  const y = (v: number): number => H - pad - ((H - 2 * pad) * Math.min(v, maxV)) / maxV;
  const dots = points.map((p) => `<circle cx="${x(p.t).toFixed(1)}" cy="${y(p.v).toFixed(1)}" r="1.6"/>`).join('');
  const ticks = [0, 0.25, 0.5, 0.75, 1]
    .map(
      (f) =>
        `<text x="${pad - 6}" y="${y(maxV * f) + 4}" text-anchor="end">${(maxV * f).toFixed(1)}</text>` +
        `<text x="${x(maxT * f)}" y="${H - pad + 16}" text-anchor="middle">${(maxT * f).toFixed(1)}s</text>`,
    )
    .join('');
  return `<h3>${title} (${points.length} points)</h3><svg width="${W}" height="${H}" font-size="11" font-family="sans-serif">
<line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="#888"/><line x1="${pad}" y1="${pad}" x2="${pad}" y2="${H - pad}" stroke="#888"/>
${ticks}<g fill="${color}" fill-opacity="0.6">${dots}</g></svg>`;
}

export function plotHtml(title: string, ttft: readonly Point[], itl: readonly Point[]): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body style="font-family:sans-serif">
<h2>${title}</h2>${scatter('TTFT (ms) by request start time', ttft, '#1f77b4')}${scatter('ITL (ms) by token time', itl, '#d62728')}
</body></html>\n`;
}
