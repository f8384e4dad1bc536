// The comment lines shared by the pages, and the chat box of the live and host pages.
//
// A line is the comment's time, a swatch of its colour, the author and the text, all put in through
// `textContent`. The chat box holds the lines of a room's ordered stream in id order, deduplicated
// by id (a resume can overlap what is shown, and our own comments come twice: the `ack` and the
// broadcast); it keeps `lastId`, the highest id seen, for the page to resume from, and follows new
// comments while the reader is at the bottom.
//
// A comment the viewer's block list hides (the `hides` option) still moves `lastId` and counts as
// seen, but it is held aside instead of shown; `refilter()`, after the list changed, takes off the
// lines it now hides and brings back the held ones it no longer does.

/** `HH:MM:SS` in local time, or '' for a bad timestamp. */
export function clock(value) {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return '';
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

/** `color` when it is `#rrggbb`, else white. */
export function safeColor(color) {
  return /^#[0-9a-fA-F]{6}$/.test(color) ? color : '#ffffff';
}

/**
 * The parts of a comment's line: `time` (a `<time>` showing `time.text`, machine-readable
 * `time.dateTime`), the colour `swatch`, the `author` and the `text` (`: ` and the comment).
 */
export function commentParts(item, time) {
  const when = document.createElement('time');
  when.dateTime = time.dateTime;
  when.textContent = time.text;
  const swatch = document.createElement('span');
  swatch.className = 'swatch';
  swatch.style.setProperty('--swatch', safeColor(item.color));
  const author = document.createElement('span');
  author.className = 'author';
  author.textContent = typeof item.author === 'string' ? item.author : '';
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = `: ${item.text ?? ''}`;
  return { time: when, swatch, author, text };
}

/** A chat line: the time of day it was sent, then the comment; `own` marks the viewer's own. */
export function chatRow(item, own = false) {
  const li = document.createElement('li');
  li.dataset.id = String(item.id);
  if (own) li.classList.add('own');
  const parts = commentParts(item, {
    text: clock(item.sent_at),
    dateTime: typeof item.sent_at === 'string' ? item.sent_at : '',
  });
  li.append(parts.time, parts.swatch, parts.author, parts.text);
  return li;
}

/** A comment the chat can show: an object with an integer id and a text. */
function isComment(item) {
  return item !== null && typeof item === 'object' && Number.isInteger(item.id) && typeof item.text === 'string';
}

export class ChatList {
  /**
   * @param {HTMLElement} el the list (`<ol>`)
   * @param {object} [options]
   * @param {number} [options.max] entries kept; older ones are removed from the top
   * @param {number} [options.maxSeen] ids remembered for deduplication before the oldest are forgotten
   * @param {number} [options.nearBottomPx] new comments are followed while scrolled within this of the bottom
   * @param {HTMLElement|null} [options.more] a "new comments below" button, shown while they are not followed
   * @param {(item: object) => boolean} [options.accept] which comments belong in this list
   * @param {((item: object) => HTMLElement[])|null} [options.actions] controls added to each line (the
   *   host's delete and mute buttons)
   * @param {(item: object) => boolean} [options.hides] which of them the viewer does not want to see
   */
  constructor(el, {
    max = 500, maxSeen = max * 10, nearBottomPx = 48, more = null, accept = () => true, actions = null,
    hides = () => false,
  } = {}) {
    this.el = el;
    this.max = max;
    this.maxSeen = maxSeen;
    this.nearBottomPx = nearBottomPx;
    this.more = more;
    this.accept = accept;
    this.actions = actions;
    this.hides = hides;
    /** id -> comment of the lines shown, to ask the block list again. */
    this.shown = new Map();
    /** Hidden comments, oldest first, at most `max`: shown again if the block list lets them. */
    this.held = [];
    /** The highest id seen on the stream: the page's resume point, or null. */
    this.lastId = null;
    /** Ids shown, for deduplication. */
    this.seen = new Set();
    /** Ids of the viewer's own comments (kept across `reset`). */
    this.own = new Set();
    el.addEventListener('scroll', () => { if (more && this.nearBottom()) more.hidden = true; });
    more?.addEventListener('click', () => this.scrollDown());
  }

  /** Whether `item` is a comment for this list. */
  accepts(item) {
    return isComment(item) && this.accept(item);
  }

  /** Whether the comment `id` is the viewer's own. */
  isOwn(id) {
    return this.own.has(id);
  }

  /**
   * Adds the comments not shown yet (and moves `lastId` past every one); returns the new ones
   * shown, in the order given (hidden ones are held, not returned). `follow` scrolls to them even
   * when the reader has scrolled up.
   */
  add(items, { follow = false } = {}) {
    const fresh = [];
    for (const item of Array.isArray(items) ? items : []) {
      if (!this.accepts(item)) continue;
      if (this.lastId === null || item.id > this.lastId) this.lastId = item.id;
      if (this.seen.has(item.id)) continue;
      this.seen.add(item.id);
      if (this.hides(item)) this.hold(item);
      else fresh.push(item);
    }
    this.append(fresh, follow);
    this.prune();
    return fresh;
  }

  /**
   * The viewer's own comment, from its `ack`: shown at once and marked as theirs, without moving
   * `lastId` (others' comments may still be on their way). True when it was not shown yet.
   */
  addOwn(item) {
    this.own.add(item.id);
    if (this.seen.has(item.id)) {
      this.el.querySelector(`li[data-id="${item.id}"]`)?.classList.add('own');
      return false;
    }
    this.seen.add(item.id);
    if (this.hides(item)) {
      this.hold(item);
      return false;
    }
    this.append([item], true);
    return true;
  }

  /**
   * Takes the lines of these comment ids out (a moderator deleted them). Their ids stay seen, so a
   * resume that overlaps cannot bring them back.
   */
  remove(ids) {
    const gone = new Set();
    for (const id of ids) {
      if (!Number.isInteger(id)) continue;
      this.seen.add(id);
      this.shown.delete(id);
      gone.add(id);
      this.el.querySelector(`li[data-id="${id}"]`)?.remove();
    }
    // Nor can unblocking: a deleted comment held by the block list is forgotten too.
    if (gone.size) this.held = this.held.filter((item) => !gone.has(item.id));
  }

  /** Empties the list and forgets the ids and `lastId` (too much was missed to fill the gap). */
  reset() {
    this.seen.clear();
    this.shown.clear();
    this.held = [];
    this.lastId = null;
    this.el.replaceChildren();
    if (this.more) this.more.hidden = true;
  }

  /**
   * Asks `hides` again for every comment (the block list changed): lines now hidden are taken
   * off and held, held comments no longer hidden are shown in their place.
   */
  refilter() {
    const back = this.held.filter((item) => !this.hides(item));
    this.held = this.held.filter((item) => this.hides(item));
    for (const [id, item] of this.shown) {
      if (!this.hides(item)) continue;
      this.el.querySelector(`li[data-id="${id}"]`)?.remove();
      this.shown.delete(id);
      this.hold(item);
    }
    this.append(back, false);
  }

  /** Scrolls to the newest comment. */
  scrollDown() {
    this.el.scrollTop = this.el.scrollHeight;
    if (this.more) this.more.hidden = true;
  }

  // ---- inside ----

  nearBottom() {
    const el = this.el;
    return el.scrollHeight - el.scrollTop - el.clientHeight <= this.nearBottomPx;
  }

  /** Keeps a hidden comment aside, the newest `max` of them. */
  hold(item) {
    this.held.push(item);
    if (this.held.length > this.max) this.held.shift();
  }

  /** Puts entries in id order (almost always at the end), then trims and scrolls. */
  append(items, follow) {
    if (items.length === 0) return;
    const wasNearBottom = this.nearBottom();
    for (const item of items) {
      const li = chatRow(item, this.own.has(item.id));
      if (this.actions) li.append(...this.actions(item));
      let before = this.el.lastElementChild;
      while (before && Number(before.dataset.id) > item.id) before = before.previousElementSibling;
      this.el.insertBefore(li, before ? before.nextSibling : this.el.firstChild);
      this.shown.set(item.id, item);
    }
    while (this.el.children.length > this.max) {
      this.shown.delete(Number(this.el.firstElementChild.dataset.id));
      this.el.firstElementChild.remove();
    }
    if (follow || wasNearBottom) this.scrollDown();
    else if (this.more) this.more.hidden = false;
  }

  /** Forgets old ids once there are many; only ids above `lastId` can still arrive from a resume. */
  prune() {
    if (this.seen.size <= this.maxSeen || this.lastId === null) return;
    const floor = this.lastId - this.maxSeen / 2;
    for (const id of this.seen) if (id < floor) this.seen.delete(id);
  }
}
