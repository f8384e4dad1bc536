// The density bar of the video page: how many comments fall in each part of the video, drawn
// under the picture across the video's timeline, so a viewer sees where everyone reacted and
// jumps there with a click.
//
// The counts come from `GET /api/videos/{video}/density?buckets=&duration=` (counted by the
// server's database; the page passes the video's length, which only it knows), and the page
// bumps the right bucket itself as comments arrive live or are sent, and lowers it when a
// moderator deletes one, rather than asking again for every comment. It asks again when the
// video, its length or the connection changes.
//
// The bar is a canvas inside a container that carries what it shows as `data-` attributes
// (`data-counts`, `data-duration`, `data-peak`, `data-total`), for tests and for anyone
// inspecting the page; the canvas is redrawn at the device's pixel ratio when its width changes.

import { api, json } from './api.js';

/** Buckets asked for: about four pixels each on a 390 px wide phone. */
export const DENSITY_BUCKETS = 100;
/** The longest duration the server takes, in seconds (the longest time a comment may have). */
const MAX_DURATION_SECS = 86_400;

export class DensityBar {
  /**
   * @param {HTMLElement} root the bar's container (holds a `canvas` and a `.density-head`)
   * @param {HTMLVideoElement} video the player it follows and seeks
   */
  constructor(root, video) {
    this.root = root;
    this.video = video;
    this.canvas = root.querySelector('canvas');
    this.head = root.querySelector('.density-head');
    /** The video id shown; null before the first `show`. */
    this.videoId = null;
    /** Comments per bucket, or null before an answer. */
    this.counts = null;
    /** The timeline the counts cover, in seconds. */
    this.duration = 0;
    /** Bumped for every new question, so that a late answer to an old one is dropped. */
    this.asked = 0;
    /** Ids already counted by a bump: a comment heard twice (its ack, then the broadcast) counts once. */
    this.bumped = new Set();
    root.addEventListener('click', (event) => this.seek(event));
    video.addEventListener('timeupdate', () => this.moveHead());
    video.addEventListener('seeked', () => this.moveHead());
    // The video's length is known (or changed: another file): count over it. A video that fails
    // to load will have none: count up to the latest comment.
    video.addEventListener('durationchange', () => this.load());
    video.addEventListener('error', () => this.load());
    new ResizeObserver(() => this.draw()).observe(root);
  }

  /** The video's length when the player knows it, clamped to what the server takes; else null. */
  videoDuration() {
    const d = this.video.duration;
    return Number.isFinite(d) && d > 0 ? Math.min(d, MAX_DURATION_SECS) : null;
  }

  /** Shows the bar of video `id` (another video: the old counts go at once). */
  show(id) {
    this.videoId = id;
    this.counts = null;
    this.bumped.clear();
    this.render();
    // After the script that called this has set the video's source, if it does: then the
    // question waits for the video's length rather than being asked twice.
    queueMicrotask(() => this.load());
  }

  /** Whether the player is still finding out its video's length (`durationchange` follows). */
  waitingForLength() {
    const v = this.video;
    return v.getAttribute('src') !== null && v.readyState === HTMLMediaElement.HAVE_NOTHING && !v.error;
  }

  /**
   * Asks for the counts again: over the video's length when the player knows it, up to the
   * latest comment otherwise. A failure leaves the bar as it was (it is a help, not the page).
   */
  async load() {
    if (this.videoId === null || this.waitingForLength()) return;
    const mine = ++this.asked;
    const duration = this.videoDuration();
    const query = new URLSearchParams({ buckets: String(DENSITY_BUCKETS) });
    if (duration !== null) query.set('duration', String(duration));
    try {
      const answer = await json(await api(`/api/videos/${encodeURIComponent(this.videoId)}/density?${query}`));
      if (mine !== this.asked) return;
      if (!Array.isArray(answer.counts) || !Number.isFinite(answer.duration)) return;
      this.counts = answer.counts.map((n) => (Number.isInteger(n) && n > 0 ? n : 0));
      this.duration = answer.duration;
      // What was bumped before this answer is in it and is not counted again. A comment bumped
      // while the question was out may be missing from it (the answer can come from the server's
      // one-second cache): the bar is then one short there until the next question.
      this.render();
    } catch {
      // Keep what is shown; the next change asks again.
    }
  }

  /** Which bucket `time` falls in, or -1 when the bar has no counts or the time is past its end. */
  bucketOf(time) {
    if (!this.counts || !Number.isFinite(time) || time < 0) return -1;
    const n = this.counts.length;
    if (this.duration <= 0) return time === 0 ? 0 : -1;
    if (time > this.duration) return -1;
    return Math.min(n - 1, Math.floor((time * n) / this.duration));
  }

  /** A comment arrived live or was sent from here: its bucket grows by one (once per id). */
  bump(item) {
    if (!Number.isInteger(item?.id) || this.bumped.has(item.id)) return;
    this.bumped.add(item.id);
    const at = this.bucketOf(item.time);
    if (at < 0) return;
    this.counts[at] += 1;
    this.render();
  }

  /** A moderator deleted a comment loaded at `time`: its bucket shrinks by one. */
  drop(time) {
    const at = this.bucketOf(time);
    if (at < 0 || this.counts[at] === 0) return;
    this.counts[at] -= 1;
    this.render();
  }

  /** Seeks the video to the moment under the click. */
  seek(event) {
    const duration = this.videoDuration();
    if (duration === null || this.video.readyState === HTMLMediaElement.HAVE_NOTHING) return;
    const box = this.root.getBoundingClientRect();
    if (box.width <= 0) return;
    const fraction = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    this.video.currentTime = fraction * duration;
  }

  /** Puts the counts in the `data-` attributes and the label, and draws them. */
  render() {
    const counts = this.counts ?? [];
    const total = counts.reduce((sum, n) => sum + n, 0);
    let peak = -1;
    counts.forEach((n, i) => { if (n > 0 && (peak < 0 || n > counts[peak])) peak = i; });
    const data = this.root.dataset;
    data.counts = JSON.stringify(counts);
    data.duration = String(this.duration);
    data.total = String(total);
    data.peak = String(peak);
    this.root.hidden = this.counts === null;
    this.root.title = total === 0
      ? 'No comments on this video yet.'
      : `${total} comments over the video; most around ${clock(((peak + 0.5) * this.duration) / counts.length)}. Click to jump there.`;
    this.root.setAttribute('aria-label', this.root.title);
    this.draw();
    this.moveHead();
  }

  /** Draws the counts as a filled profile, highest bucket to the bar's full height. */
  draw() {
    const counts = this.counts;
    const { canvas } = this;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, width, height);
    if (!counts || counts.length === 0) return;
    const max = Math.max(...counts);
    if (max === 0) return;
    const style = getComputedStyle(this.root);
    ctx.fillStyle = style.getPropertyValue('--density-fill').trim() || '#2f6fde';
    const step = width / counts.length;
    ctx.beginPath();
    ctx.moveTo(0, height);
    counts.forEach((n, i) => {
      // A square root keeps a few comments visible next to a peak of hundreds.
      const y = height - (Math.sqrt(n) / Math.sqrt(max)) * (height - 1);
      ctx.lineTo(i * step, y);
      ctx.lineTo((i + 1) * step, y);
    });
    ctx.lineTo(width, height);
    ctx.closePath();
    ctx.fill();
  }

  /** Puts the playhead marker where the video is. */
  moveHead() {
    const duration = this.videoDuration() ?? this.duration;
    const t = this.video.currentTime;
    const at = duration > 0 && Number.isFinite(t) ? Math.min(1, Math.max(0, t / duration)) : 0;
    this.head.style.left = `${(at * 100).toFixed(3)}%`;
  }
}

/** `m:ss` for the bar's label. */
function clock(secs) {
  const s = Math.max(0, Math.floor(secs));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}
