"""Measure the text of a rendered figure: every <text> box of its exported SVG, as Chromium
lays it out, and the pairs that overlap (shared by the layout tests and the export preview
check)."""

from __future__ import annotations

from typing import Any

# Boxes of every visible text element, tagged with the SVG group it belongs to.
MEASURE_JS = """() => {
  const out = [];
  for (const t of document.querySelectorAll('svg text')) {
    const s = (t.textContent || '').trim();
    if (!s) continue;
    const r = t.getBoundingClientRect();
    if (r.width < 0.5 || r.height < 0.5) continue;
    let g = 'other';
    for (let e = t; e && e.tagName !== 'svg'; e = e.parentElement) {
      const c = (e.getAttribute('class') || '').split(' ')[0];
      if (c === 'legend') { g = 'legend'; break; }
      if (c === 'g-gtitle') { g = 'title'; break; }
      if (c === 'annotation') { g = 'annotation'; break; }
      if (c.startsWith('colorbar') || c === 'cbtitle' || c === 'cbaxis') { g = 'colorbar'; break; }
      if (/^x\\d*tick$/.test(c)) { g = 'xtick'; break; }
      if (/^y\\d*tick$/.test(c)) { g = 'ytick'; break; }
      if (/^angularaxistick|radialaxistick$/.test(c)) { g = 'polartick'; break; }
      if (/^g-x\\d*title$/.test(c)) { g = 'xtitle'; break; }
      if (/^g-y\\d*title$/.test(c)) { g = 'ytitle'; break; }
      if (c === 'textpoint' || c === 'bartext' || c === 'point') { g = 'data'; break; }
    }
    const tr = t.getAttribute('transform') || '';
    const m = tr.match(/rotate\\((-?[\\d.]+)/);
    out.push({text: s, group: g, angle: m ? parseFloat(m[1]) : 0,
              x0: r.left, y0: r.top, x1: r.right, y1: r.bottom});
  }
  const svg = document.querySelector('svg').getBoundingClientRect();
  return {boxes: out, width: svg.width, height: svg.height};
}"""


def overlaps(boxes: list[dict[str, Any]], tol: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of texts whose boxes overlap by more than ``tol`` px in both directions (data
    labels among themselves, e.g. heatmap cell numbers, are allowed to touch)."""
    bad = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if a["group"] == b["group"] == "data":
                continue
            if a["group"] == b["group"] and (a["angle"] or b["angle"]):
                continue  # tilted tick labels: their upright boxes overlap, the glyphs do not
            dx = min(a["x1"], b["x1"]) - max(a["x0"], b["x0"])
            dy = min(a["y1"], b["y1"]) - max(a["y0"], b["y0"])
            if dx > tol and dy > tol:
                bad.append((f"{a['group']}:{a['text']}", f"{b['group']}:{b['text']}"))
    return bad


def outside(
    boxes: list[dict[str, Any]], width: float, height: float, tol: float = 1.0
) -> list[str]:
    """Texts cut off by the figure's edge."""
    return [
        f"{b['group']}:{b['text']}"
        for b in boxes
        if b["x0"] < -tol or b["y0"] < -tol or b["x1"] > width + tol or b["y1"] > height + tol
    ]
