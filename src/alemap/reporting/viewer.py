"""An offline, dependency-free slice viewer for the HTML report.

The background (T1 template or mask) is embedded once as an 8-bit volume
(base64), and each analysis's thresholded map as a sparse list of voxels, so a
report with several analyses stays small. The JavaScript draws sagittal,
coronal and axial slices on canvases; clicking a slice moves the cross-hair,
and a menu switches the overlay. No CDN, no network: the page works from a
USB stick.
"""

from __future__ import annotations

import base64
import json

import numpy as np

from alemap.reporting.figures import _to_ras, background
from alemap.space.grid import Grid

__all__ = ["viewer_payload", "VIEWER_JS"]


def viewer_payload(grid: Grid, overlays: dict) -> str:
    """JSON for the viewer: background volume and sparse overlays (name -> in-mask values)."""
    bg = _to_ras(background(grid), grid)
    bg = np.clip(bg / (np.percentile(bg[bg > 0], 99) if np.any(bg > 0) else 1.0), 0, 1)
    bg8 = (bg * 255).astype(np.uint8)
    shape = list(bg8.shape)
    data = {"shape": shape, "background": base64.b64encode(np.ascontiguousarray(bg8).tobytes()).decode(),
            "origin_mm": list(map(float, _ras_origin(grid))), "voxel_mm": float(grid.voxel_size[0]), "overlays": {}}
    for name, values in overlays.items():
        vol = _to_ras(grid.to_volume(values, dtype=np.float32), grid)
        idx = np.flatnonzero(vol.ravel() > 0)
        data["overlays"][name] = {"index": idx.tolist(), "value": np.round(vol.ravel()[idx], 3).tolist(),
                                  "max": float(vol.max()) if idx.size else 0.0}
    return json.dumps(data, separators=(",", ":"))


def _ras_origin(grid: Grid) -> np.ndarray:
    # mm of voxel (0, 0, 0) after flipping to RAS order
    corner = np.zeros(3)
    for axis in range(3):
        corner[axis] = grid.shape[axis] - 1 if grid.affine[axis, axis] < 0 else 0
    return grid.ijk_to_mm(corner)[0]


VIEWER_JS = r"""
(function () {
  const el = document.getElementById('viewer-data');
  if (!el) { return; }
  const D = JSON.parse(el.textContent);
  const [NX, NY, NZ] = D.shape;
  const raw = atob(D.background);
  const bg = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) { bg[i] = raw.charCodeAt(i); }
  const names = Object.keys(D.overlays);
  const select = document.getElementById('viewer-overlay');
  names.forEach(function (n) { const o = document.createElement('option'); o.value = n; o.textContent = n; select.appendChild(o); });
  let ov = new Float32Array(NX * NY * NZ), vmax = 1;
  let pos = [Math.floor(NX / 2), Math.floor(NY / 2), Math.floor(NZ / 2)];
  function load(name) {
    ov = new Float32Array(NX * NY * NZ);
    const o = D.overlays[name];
    if (!o) { return; }
    for (let i = 0; i < o.index.length; i++) { ov[o.index[i]] = o.value[i]; }
    vmax = o.max > 0 ? o.max : 1;
    if (o.index.length) {
      let best = 0;
      for (let i = 1; i < o.index.length; i++) { if (o.value[i] > o.value[best]) { best = i; } }
      const f = o.index[best];
      pos = [Math.floor(f / (NY * NZ)), Math.floor(f / NZ) % NY, f % NZ];
    }
  }
  function hot(t) {
    return [Math.min(255, 3 * 255 * t), Math.max(0, Math.min(255, 3 * 255 * t - 255)), Math.max(0, Math.min(255, 3 * 255 * t - 510))];
  }
  function draw(canvas, w, h, at) {
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext('2d');
    const img = ctx.createImageData(w, h);
    for (let v = 0; v < h; v++) {
      for (let u = 0; u < w; u++) {
        const f = at(u, h - 1 - v);
        const p = 4 * (v * w + u);
        const g = bg[f];
        let c = [g, g, g];
        if (ov[f] > 0) { c = hot(Math.min(1, ov[f] / vmax)); }
        img.data[p] = c[0]; img.data[p + 1] = c[1]; img.data[p + 2] = c[2]; img.data[p + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
  }
  const idx = function (i, j, k) { return (i * NY + j) * NZ + k; };
  const views = {
    sag: { w: NY, h: NZ, at: function (u, v) { return idx(pos[0], u, v); }, click: function (u, v) { pos[1] = u; pos[2] = v; } },
    cor: { w: NX, h: NZ, at: function (u, v) { return idx(u, pos[1], v); }, click: function (u, v) { pos[0] = u; pos[2] = v; } },
    axi: { w: NX, h: NY, at: function (u, v) { return idx(u, v, pos[2]); }, click: function (u, v) { pos[0] = u; pos[1] = v; } },
  };
  function render() {
    Object.keys(views).forEach(function (k) { const s = views[k]; draw(document.getElementById('viewer-' + k), s.w, s.h, s.at); });
    const mm = [0, 1, 2].map(function (a) { return (D.origin_mm[a] + D.voxel_mm * pos[a]).toFixed(0); });
    const f = idx(pos[0], pos[1], pos[2]);
    document.getElementById('viewer-pos').textContent = 'MNI (' + mm.join(', ') + ') mm, value ' + (ov[f] > 0 ? ov[f].toFixed(2) : '0');
  }
  Object.keys(views).forEach(function (k) {
    const c = document.getElementById('viewer-' + k);
    c.addEventListener('click', function (e) {
      const r = c.getBoundingClientRect();
      const u = Math.floor((e.clientX - r.left) / r.width * c.width);
      const v = c.height - 1 - Math.floor((e.clientY - r.top) / r.height * c.height);
      views[k].click(u, v); render();
    });
  });
  select.addEventListener('change', function () { load(select.value); render(); });
  if (names.length) { load(names[0]); }
  render();
  document.body.dataset.viewer = 'ok';
})();
"""
