// The flying-comment renderer shared by the pages.
//
// Scrolling comments all move at the same speed, so one that starts after another in the same lane
// can never catch up with it: a lane is free again once the last comment's tail has cleared the right
// edge (plus a gap). Top and bottom comments hold still, centred, for HOLD_MS in their own lanes.
// A comment that finds no free lane waits in a short queue; past its bound the oldest waiting one is
// dropped from the stage (the page's list still has it). At most MAX_ON_STAGE comments are on the
// stage at once, so a flood cannot freeze the tab. The stage pauses with the video (the comments
// on it stop where they are and their lanes stay taken), and opacity and size are settings.

/** How long top and bottom comments stay, in milliseconds. */
export const HOLD_MS = 4000;
/** Time for a scrolling comment to travel one stage width, in milliseconds. */
const CROSS_MS = 7000;
/** Space kept between two comments in a lane, in pixels. */
const GAP_PX = 24;
/** Comments that may wait for a lane before the oldest is dropped. */
const MAX_WAITING = 60;
/** Comments on the stage at once, at most. */
export const MAX_ON_STAGE = 150;

export class Stage {
  /** @param {HTMLElement} el the stage box */
  constructor(el) {
    this.el = el;
    this.freeAt = { scroll: [], top: [], bottom: [] };
    this.waiting = [];
    this.timer = null;
    /** performance.now() when paused, or null while running. */
    this.pausedAt = null;
    document.addEventListener('visibilitychange', () => {
      // Animations do not run in a hidden tab; do not let a backlog burst out on return.
      if (document.hidden) this.clear();
    });
  }

  /** Shows one comment `{text, color, mode}`; `own` marks the viewer's own comment. */
  add(item, own = false) {
    if (document.hidden) return;
    if (this.pausedAt !== null || !this.place(item, own)) {
      this.waiting.push({ item, own });
      if (this.waiting.length > MAX_WAITING) this.waiting.shift();
      this.schedule();
    }
  }

  /** Freezes the comments where they are (the video paused). */
  pause() {
    if (this.pausedAt !== null) return;
    this.pausedAt = performance.now();
    this.el.classList.add('paused');
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** Lets them move on; lanes stay taken for as long as the pause lasted. */
  resume() {
    if (this.pausedAt === null) return;
    const paused = performance.now() - this.pausedAt;
    this.pausedAt = null;
    for (const lanes of Object.values(this.freeAt)) {
      for (let i = 0; i < lanes.length; i++) if (lanes[i]) lanes[i] += paused;
    }
    this.el.classList.remove('paused');
    this.schedule();
  }

  /** Whether the stage is paused. */
  get paused() {
    return this.pausedAt !== null;
  }

  /** Comment opacity, from 0.1 to 1. */
  setOpacity(opacity) {
    const value = Math.min(1, Math.max(0.1, Number(opacity) || 1));
    this.el.style.setProperty('--dm-opacity', String(value));
  }

  /** Comment size as a factor of the default, from 0.5 to 2. */
  setSize(scale) {
    const value = Math.min(2, Math.max(0.5, Number(scale) || 1));
    this.el.style.setProperty('--dm-scale', String(value));
  }

  /**
   * Takes the comments with these ids off the stage at once, mid-flight too, and out of the
   * queue (a moderator deleted them). Their lanes free up when they would have.
   */
  remove(ids) {
    const gone = new Set(ids.map(Number));
    this.waiting = this.waiting.filter(({ item }) => !gone.has(item.id));
    for (const node of [...this.el.children]) {
      if (gone.has(Number(node.dataset.id))) node.remove();
    }
  }

  /** Removes everything on and waiting for the stage. */
  clear() {
    this.waiting = [];
    clearTimeout(this.timer);
    this.timer = null;
    this.el.replaceChildren();
    this.freeAt = { scroll: [], top: [], bottom: [] };
  }

  /** Tries to put a comment in a free lane now; false when every lane of its kind is busy. */
  place(item, own) {
    if (this.el.childElementCount >= MAX_ON_STAGE) return false;
    const mode = item.mode === 'top' || item.mode === 'bottom' ? item.mode : 'scroll';
    const node = document.createElement('div');
    node.className = `dm measuring ${mode}`;
    if (own) node.classList.add('own');
    node.textContent = item.text;
    // Stored comments carry an id, by which a moderator's delete finds them mid-flight.
    if (Number.isInteger(item.id)) node.dataset.id = String(item.id);
    node.style.setProperty('--c', /^#[0-9a-fA-F]{6}$/.test(item.color) ? item.color : '#ffffff');
    this.el.append(node);

    const stageW = this.el.clientWidth;
    const stageH = this.el.clientHeight;
    const width = node.offsetWidth;
    const rowH = node.offsetHeight || 1;
    const rows = Math.max(1, Math.floor(stageH / rowH));
    const now = performance.now();

    // Rows for fixed comments: the top half from the top, the bottom half from the bottom.
    const half = Math.max(1, Math.floor(rows / 2));
    const lanes = mode === 'scroll' ? rows : half;
    const free = this.freeAt[mode];
    let lane = -1;
    for (let i = 0; i < lanes; i++) {
      if (!(free[i] > now)) { lane = i; break; }
    }
    if (lane < 0) {
      node.remove();
      return false;
    }

    const row = mode === 'bottom' ? rows - 1 - lane : lane;
    node.style.setProperty('--y', `${row * rowH}px`);
    if (mode === 'scroll') {
      const speed = Math.max(stageW, 1) / CROSS_MS; // px per ms
      const distance = stageW + width;
      node.style.setProperty('--dx', `${-distance}px`);
      node.style.setProperty('--dur', `${Math.round(distance / speed)}ms`);
      free[lane] = now + (width + GAP_PX) / speed;
    } else {
      node.style.setProperty('--hold', `${HOLD_MS}ms`);
      free[lane] = now + HOLD_MS;
    }
    node.addEventListener('animationend', () => node.remove(), { once: true });
    node.classList.remove('measuring');
    return true;
  }

  /** Retries the waiting comments when the earliest lane frees up. */
  schedule() {
    if (this.timer !== null || this.waiting.length === 0 || this.pausedAt !== null) return;
    const now = performance.now();
    const times = [...this.freeAt.scroll, ...this.freeAt.top, ...this.freeAt.bottom].filter((t) => t > now);
    const delay = times.length ? Math.min(...times) - now : 50;
    this.timer = setTimeout(() => {
      this.timer = null;
      const pending = this.waiting;
      this.waiting = [];
      for (const { item, own } of pending) {
        if (!this.place(item, own)) this.waiting.push({ item, own });
      }
      this.schedule();
    }, Math.max(16, delay));
  }
}

/**
 * Wires the page's display settings (`#dm-opacity` and `#dm-size` range inputs, when present) to
 * `stage`, remembering them in localStorage so every page shows comments the same way.
 */
export function bindStageSettings(stage) {
  for (const [id, key, apply] of [
    ['dm-opacity', 'danmaku.opacity', (v) => stage.setOpacity(v)],
    ['dm-size', 'danmaku.size', (v) => stage.setSize(v)],
  ]) {
    const input = document.getElementById(id);
    if (!input) continue;
    const saved = localStorage.getItem(key);
    if (saved !== null) input.value = saved;
    apply(input.value);
    input.addEventListener('input', () => {
      apply(input.value);
      localStorage.setItem(key, input.value);
    });
  }
}
