// The host's end of a live session: its comments become the timeline of a video on the video
// service, each at its offset from the stream's start, so the replay's viewers see them at the
// moment they were sent (POST /api/rooms/{room}/recording with the host token).
//
// The start is a time typed in, or what the host marked with "The stream starts now" (kept by the
// server, on its clock, so another tab or device of the host uses it too: POST .../recording/start),
// or else the room's creation. Attaching again adds nothing, so a host may attach at every break of
// a long session.

import { api, describe, json } from './api.js';
import { clock } from './chat-list.js';

const VIDEO_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** The video service's port, as the landing page has it. */
const VIDEO_PORT = 8082;

export class RecordingPanel {
  /**
   * @param {object} parts
   * @param {HTMLFormElement} parts.form the attach form
   * @param {HTMLInputElement} parts.video the video id
   * @param {HTMLInputElement} parts.start a start typed in (`datetime-local`, this machine's time zone)
   * @param {HTMLButtonElement} parts.mark "The stream starts now"
   * @param {HTMLElement} parts.marked says which start will be used
   * @param {HTMLElement} parts.note the result, or what went wrong
   * @param {() => (object|null)} parts.host the hosted room's record (`room`, `host_token`)
   */
  constructor(parts) {
    Object.assign(this, parts);
    /** The start the server keeps for the hosted room, or null. */
    this.markedAt = null;
    this.mark.addEventListener('click', () => this.markStart());
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.attach();
    });
    this.start.addEventListener('input', () => this.show());
  }

  /** Loads the hosted room's mark from the server, and shows its id as the default video. */
  async load() {
    const host = this.host();
    if (!host) return;
    if (!this.video.value) this.video.value = host.room;
    this.markedAt = null;
    this.show();
    try {
      const kept = await json(await api(this.path(host, 'recording'), { token: host.host_token }));
      if (this.host() === host) this.markedAt = typeof kept.started_at === 'string' ? kept.started_at : null;
    } catch { /* shown as unmarked; attaching says what is wrong */ }
    this.show();
  }

  /** Says which start attaching will use. */
  show() {
    const typed = this.typedStart();
    if (typed) {
      this.marked.textContent = `Starts at ${clock(typed)} (typed in).`;
    } else if (this.markedAt) {
      this.marked.textContent = `The stream started at ${clock(this.markedAt)}.`;
    } else {
      this.marked.textContent = 'No start marked: the room\u2019s creation counts as the start.';
    }
  }

  // ---- inside ----

  path(host, rest) {
    return `/api/rooms/${encodeURIComponent(host.room)}/${rest}`;
  }

  async markStart() {
    const host = this.host();
    if (!host) return;
    try {
      const kept = await json(await api(this.path(host, 'recording/start'), {
        method: 'POST', token: host.host_token,
      }));
      this.markedAt = kept.started_at;
      this.show();
    } catch (err) {
      this.note.textContent = `Could not mark the start: ${describe(err)}`;
    }
  }

  /** The start typed in, as an ISO time, or null. */
  typedStart() {
    if (!this.start.value) return null;
    const at = new Date(this.start.value);
    return Number.isNaN(at.getTime()) ? null : at.toISOString();
  }

  async attach() {
    const host = this.host();
    if (!host) return;
    const video = this.video.value.trim();
    if (!VIDEO_RE.test(video)) {
      this.note.textContent = 'A video id is 1 to 64 letters, digits, _ or -.';
      return;
    }
    // Without a typed start, the server uses the marked one, or the room's creation.
    const body = { video };
    const start = this.typedStart();
    if (start) body.started_at = start;
    this.note.textContent = 'Attaching…';
    try {
      const done = await json(await api(this.path(host, 'recording'), {
        method: 'POST', token: host.host_token, body,
      }));
      const link = document.createElement('a');
      link.href = `${location.protocol}//${location.hostname}:${VIDEO_PORT}/?video=${encodeURIComponent(video)}`;
      link.textContent = 'open the video page';
      link.dataset.video = video;
      this.note.replaceChildren(
        `Attached ${done.comments} comment${done.comments === 1 ? '' : 's'} to video “${video}” `
          + `(${done.added} new); `,
        link,
        '.',
      );
    } catch (err) {
      this.note.textContent = `Could not attach the recording: ${describe(err)}`;
    }
  }
}
