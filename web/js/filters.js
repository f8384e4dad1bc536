// The viewer's block list (屏蔽): keywords, regular expressions, authors, positions (modes) and
// colours whose comments this viewer never sees, and the one question the pages ask of it:
// `hides(comment)`. The pages ask it wherever comments arrive, before the stage or a list sees
// them, and again for what is already shown when the list changes.
//
// Matching (`danmaku tail --hide-*` follows the same rules, see cli/src/filter.rs):
// - Keywords and authors are compared after Unicode NFKC and lowercasing (`fold`), so the
//   full-width `ＡＢＣ` of a phone keyboard is the `abc` of the list. A keyword hides a comment
//   whose text contains it; an author hides the comments of exactly that name (blocking `bob`
//   leaves `bobby` alone).
// - A regular expression is JavaScript's, with the flags `iu` (case-insensitive, by code point),
//   tested against the NFKC form of the text. One that does not compile is refused, not saved.
// - A position hides every comment of that mode; a colour every comment of exactly that colour;
//   "coloured" every comment that is not the default white.
//
// Where it is kept: one cookie, not localStorage. The three services run on different ports,
// and localStorage belongs to an origin (scheme, host and port), so a list kept there on the live
// page would be missing from the video page. A cookie belongs to a host whatever the port, so
// every page of this site on the same host name reads the same list. A cookie travels with every
// request to that host (the services ignore it and log no cookies), so it is kept small: the list
// as compact JSON, UTF-8, base64url (about 1.3 bytes per ASCII character, 4 per CJK one), bounded
// to MAX_COOKIE_CHARS, under the 4 KiB a browser keeps per cookie; an empty list deletes it. The
// cookie is read again whenever the page comes back into view, so a change made in another tab
// applies there too.

/** The modes a comment can have, as on the wire. */
export const MODES = ['scroll', 'top', 'bottom'];
/** The default colour; "coloured" means any other. */
export const WHITE = '#ffffff';
/** The cookie holding the list. */
export const COOKIE_NAME = 'danmaku_block';
/**
 * Longest cookie value, in characters: with the name and attributes it stays under the 4096
 * bytes browsers keep per cookie.
 */
export const MAX_COOKIE_CHARS = 3800;
/** How long the cookie lasts, in seconds: 400 days, the most Chromium keeps one; every change renews it. */
const COOKIE_MAX_AGE_SECS = 400 * 24 * 3600;
/** Prefix of the cookie's value: the format, so a later one can be told apart. */
const FORMAT = 'v1.';

/**
 * Bounds on the list. An entry longer than the longest comment (or name) could never match;
 * regular expressions run against every comment, so there are fewer of them.
 */
export const LIMITS = Object.freeze({
  keyword: { count: 100, chars: 100 },
  regex: { count: 20, chars: 200 },
  author: { count: 100, chars: 24 },
  color: { count: 16 },
});

/** The kinds of typed entries, with their names for people. */
export const KINDS = Object.freeze({ keyword: 'Keyword', regex: 'Regex', author: 'Author' });

const COLOR_RE = /^#[0-9a-f]{6}$/;

/** `text` as the list compares it: NFKC, then lowercase. */
export function fold(text) {
  return String(text ?? '').normalize('NFKC').toLowerCase();
}

/** Length in characters (code points), as the server counts. */
const chars = (s) => [...s].length;

/** A pattern as the list runs it. Throws a SyntaxError when it does not compile. */
export function compileRegex(pattern) {
  return new RegExp(pattern, 'iu');
}

/** An empty list's settings. */
function emptySettings() {
  return { keyword: [], regex: [], author: [], mode: [], color: [], colored: false };
}

/**
 * What is wrong with adding `value` as a `kind` entry to `settings`, in words, or null. `value`
 * is already trimmed.
 */
export function entryProblem(settings, kind, value) {
  const limit = LIMITS[kind];
  if (!limit || !KINDS[kind]) return 'Choose what to block.';
  if (!value) return 'Type something to block first.';
  if (chars(value) > limit.chars) {
    return `${KINDS[kind]} entries are at most ${limit.chars} characters.`;
  }
  if (kind === 'regex') {
    try { compileRegex(value); } catch (err) {
      const why = String(err?.message ?? '').replace(/^Invalid regular expression: /, '');
      return `Not a valid regular expression: ${why}`;
    }
  }
  const same = kind === 'regex' ? (v) => v === value : (v) => fold(v) === fold(value);
  if (settings[kind].some(same)) return `“${value}” is already in the list.`;
  if (settings[kind].length >= limit.count) {
    return `The list holds at most ${limit.count} ${KINDS[kind].toLowerCase()} entries; remove one first.`;
  }
  return null;
}

/** Whether the settings hide nothing. */
function isEmpty(s) {
  return !s.keyword.length && !s.regex.length && !s.author.length && !s.mode.length && !s.color.length
    && !s.colored;
}

// ---- the cookie ----

/** The settings as the cookie's value (`v1.` and base64url of compact JSON), or '' when empty. */
export function encode(settings) {
  if (isEmpty(settings)) return '';
  const short = {};
  for (const [key, name] of [['k', 'keyword'], ['r', 'regex'], ['a', 'author'], ['m', 'mode'], ['c', 'color']]) {
    if (settings[name].length) short[key] = settings[name];
  }
  if (settings.colored) short.x = 1;
  const bytes = new TextEncoder().encode(JSON.stringify(short));
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return FORMAT + btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * The settings in a cookie's value; anything that is not a valid entry is dropped (the cookie is
 * the viewer's to edit, or an older page's), and a value that cannot be read is an empty list.
 */
export function decode(value) {
  const settings = emptySettings();
  if (typeof value !== 'string' || !value.startsWith(FORMAT)) return settings;
  let short;
  try {
    const binary = atob(value.slice(FORMAT.length).replace(/-/g, '+').replace(/_/g, '/'));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    short = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return settings;
  }
  if (short === null || typeof short !== 'object') return settings;
  for (const [key, kind] of [['k', 'keyword'], ['r', 'regex'], ['a', 'author']]) {
    for (const raw of Array.isArray(short[key]) ? short[key] : []) {
      if (typeof raw !== 'string') continue;
      const value = raw.trim();
      if (entryProblem(settings, kind, value) === null) settings[kind].push(value);
    }
  }
  for (const mode of Array.isArray(short.m) ? short.m : []) {
    if (MODES.includes(mode) && !settings.mode.includes(mode)) settings.mode.push(mode);
  }
  for (const color of Array.isArray(short.c) ? short.c : []) {
    if (typeof color === 'string' && COLOR_RE.test(color) && !settings.color.includes(color)
        && settings.color.length < LIMITS.color.count) settings.color.push(color);
  }
  settings.colored = short.x === 1;
  return settings;
}

function readCookie() {
  for (const part of document.cookie.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === COOKIE_NAME) return part.slice(eq + 1).trim();
  }
  return '';
}

function writeCookie(value) {
  // No Domain: the host alone, every port. Path=/ for every page. Lax: not sent along when
  // another site posts here.
  const secure = location.protocol === 'https:' ? '; Secure' : '';
  const life = value ? `Max-Age=${COOKIE_MAX_AGE_SECS}` : 'Max-Age=0';
  document.cookie = `${COOKIE_NAME}=${value}; Path=/; ${life}; SameSite=Lax${secure}`;
}

// ---- the list ----

/**
 * The viewer's block list, kept in the cookie. Fires `change` whenever what it hides changes
 * (here, or in another tab once this page is looked at again).
 */
export class BlockList extends EventTarget {
  constructor() {
    super();
    /** The entries, as typed (trimmed). Read-only outside; change them through the methods. */
    this.settings = emptySettings();
    /** The cookie's value as last read or written, to notice a change from another tab. */
    this.saved = '';
    this.compile();
  }

  /** The list saved in this browser; watches for changes made by other tabs. */
  static load() {
    const list = new BlockList();
    list.reload();
    const again = () => { if (document.visibilityState === 'visible') list.reload(); };
    document.addEventListener('visibilitychange', again);
    window.addEventListener('focus', again);
    return list;
  }

  /** Whether the list survives a reload (cookies are on). */
  get persistent() {
    return navigator.cookieEnabled;
  }

  /** Whether nothing is hidden. */
  get empty() {
    return isEmpty(this.settings);
  }

  /** Reads the cookie again; fires `change` when it differs from what this page had. */
  reload() {
    const value = readCookie();
    if (value === this.saved) return;
    this.saved = value;
    this.settings = decode(value);
    this.changed();
  }

  /** Whether the viewer hides `item` (a comment with `author`, `text`, `mode` and `color`). */
  hides(item) {
    if (this.compiled === null || item === null || typeof item !== 'object') return false;
    const c = this.compiled;
    // Read as the stage draws them: an unknown mode scrolls, a bad colour is white.
    const mode = MODES.includes(item.mode) ? item.mode : 'scroll';
    if (c.modes.has(mode)) return true;
    const color = typeof item.color === 'string' && COLOR_RE.test(item.color.toLowerCase())
      ? item.color.toLowerCase() : WHITE;
    if (c.colors.has(color) || (c.colored && color !== WHITE)) return true;
    if (c.authors.size && c.authors.has(fold(String(item.author ?? '').trim()))) return true;
    if (!c.keywords.length && !c.regexes.length) return false;
    const text = String(item.text ?? '').normalize('NFKC');
    const lower = text.toLowerCase();
    return c.keywords.some((k) => lower.includes(k)) || c.regexes.some((r) => r.test(text));
  }

  /**
   * Adds a typed entry (`kind`: keyword, regex or author). Returns what is wrong, in words, and
   * changes nothing then; null when it was added and saved.
   */
  add(kind, raw) {
    const value = String(raw ?? '').trim();
    const problem = entryProblem(this.settings, kind, value);
    if (problem) return problem;
    return this.update((s) => { s[kind] = [...s[kind], value]; });
  }

  /** Removes a typed entry or a colour. */
  remove(kind, value) {
    this.update((s) => { s[kind] = s[kind].filter((v) => v !== value); });
  }

  /** Hides or shows the comments of a mode. */
  setMode(mode, hidden) {
    if (!MODES.includes(mode)) return;
    this.update((s) => {
      s.mode = MODES.filter((m) => (m === mode ? hidden : s.mode.includes(m)));
    });
  }

  /** Hides a colour (`#rrggbb`); what is wrong, in words, or null. */
  addColor(raw) {
    const color = String(raw ?? '').toLowerCase();
    if (!COLOR_RE.test(color)) return 'Pick a colour first.';
    if (this.settings.color.includes(color)) return `${color} is already hidden.`;
    if (this.settings.color.length >= LIMITS.color.count) {
      return `At most ${LIMITS.color.count} colours can be hidden; remove one first.`;
    }
    return this.update((s) => { s.color = [...s.color, color]; });
  }

  /** Hides or shows every comment that is not white. */
  setColored(on) {
    this.update((s) => { s.colored = Boolean(on); });
  }

  /** Empties the list. */
  clear() {
    this.update((s) => Object.assign(s, emptySettings()));
  }

  // ---- inside ----

  /**
   * Applies `edit` to a copy of the settings and saves it, unless the cookie would grow past its
   * bound; what is wrong, in words, or null.
   */
  update(edit) {
    const next = structuredClone(this.settings);
    edit(next);
    const value = encode(next);
    if (value.length > MAX_COOKIE_CHARS) {
      return 'The block list is full (a browser keeps about 4 KB per cookie): remove some entries first.';
    }
    this.settings = next;
    this.saved = value;
    writeCookie(value);
    this.changed();
    return null;
  }

  /** Prepares the matching and tells the page. */
  compile() {
    const s = this.settings;
    this.compiled = isEmpty(s) ? null : {
      keywords: s.keyword.map(fold),
      // Only patterns that compile are ever saved; the filter keeps a bad cookie from throwing.
      regexes: s.regex.flatMap((p) => { try { return [compileRegex(p)]; } catch { return []; } }),
      authors: new Set(s.author.map(fold)),
      modes: new Set(s.mode),
      colors: new Set(s.color),
      colored: s.colored,
    };
  }

  changed() {
    this.compile();
    this.dispatchEvent(new Event('change'));
  }
}
