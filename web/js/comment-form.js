// What the pages with a comment form share: the remembered author name and the comment's limits
// (the server checks them again; these only spare a round trip and say it in words).

/** Where the author name is remembered, for every page. */
export const AUTHOR_KEY = 'danmaku.author';
/** Longest comment, in characters (code points, as the server counts). */
export const MAX_TEXT_CHARS = 100;
/** Longest name, in characters. */
export const MAX_AUTHOR_CHARS = 24;

/** Length in characters (code points), not UTF-16 units. */
export const chars = (s) => [...s].length;

/** The remembered author name, or null (none yet, or storage switched off). */
export function loadAuthor() {
  try { return localStorage.getItem(AUTHOR_KEY); } catch { return null; }
}

/** Remembers `name` for every page. */
export function saveAuthor(name) {
  try { localStorage.setItem(AUTHOR_KEY, name); } catch { /* storage off: nothing to remember */ }
}

/** Fills `input` with the remembered name (or a guest name) and remembers what is typed in it. */
export function rememberAuthor(input) {
  input.value = loadAuthor() ?? `guest-${Math.floor(1000 + Math.random() * 9000)}`;
  input.addEventListener('change', () => {
    const name = input.value.trim();
    if (name) saveAuthor(name);
  });
}

/** What is wrong with a comment before it is sent, in words, or null when nothing is. */
export function commentProblem(author, text) {
  if (chars(author) < 1 || chars(author) > MAX_AUTHOR_CHARS) {
    return `Your name must be 1 to ${MAX_AUTHOR_CHARS} characters.`;
  }
  if (!text) return 'Write a comment first.';
  if (chars(text) > MAX_TEXT_CHARS) return `A comment is at most ${MAX_TEXT_CHARS} characters.`;
  return null;
}
