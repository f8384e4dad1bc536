// The block list's settings panel, which the "Block" button of every page that shows comments
// opens, and the stage that asks the list before it shows a comment.
//
// The panel is made here, in one place, so the four pages only hold a button and an empty
// section. Every entry goes into the page through `textContent`.

import { BlockList, KINDS, LIMITS, MODES } from './filters.js';
import { Stage } from './stage.js';

/** What each kind of entry asks for, as the text field's placeholder. */
const PLACEHOLDERS = {
  keyword: 'a word or phrase, e.g. spoiler',
  regex: 'a JavaScript regular expression, e.g. ^2{3,}3*$',
  author: 'a name, exactly as shown',
};

const MODE_NAMES = { scroll: 'Scrolling', top: 'Top', bottom: 'Bottom' };

/**
 * The stage, with the block list asked first: a hidden comment never reaches it, a comment
 * waiting for a lane is asked again when it gets one (the list may have changed meanwhile), and
 * when the list changes, the comments on the stage that it now hides are taken off.
 *
 * Built on the stage's own `add` and `place` without changing stage.js: `place` appends the
 * comment's node as the stage's last child when it returns true, and that is how a node is tied
 * to its comment here.
 */
export class FilteredStage extends Stage {
  /**
   * @param {HTMLElement} el the stage box
   * @param {BlockList} blockList what the viewer hides
   */
  constructor(el, blockList) {
    super(el);
    this.blockList = blockList;
    /** node on the stage -> its comment. */
    this.nodeItems = new WeakMap();
    blockList.addEventListener('change', () => this.refilter());
  }

  /** Shows one comment unless the viewer hides it. */
  add(item, own = false) {
    if (this.blockList.hides(item)) return;
    super.add(item, own);
  }

  /** As Stage's; a comment hidden by now counts as placed, which drops it from the queue. */
  place(item, own) {
    if (this.blockList.hides(item)) return true;
    const placed = super.place(item, own);
    const node = this.el.lastElementChild;
    if (placed && node) this.nodeItems.set(node, item);
    return placed;
  }

  /** Takes off the stage what the list hides now. */
  refilter() {
    for (const node of [...this.el.children]) {
      const item = this.nodeItems.get(node);
      if (item && this.blockList.hides(item)) node.remove();
    }
  }
}

/** An element with a class and text. */
function el(tag, { className = '', text = '', ...props } = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  Object.assign(node, props);
  return node;
}

/** A labelled control: `<label>text <control></label>`. */
function labelled(text, control, className = '') {
  const label = el('label', { className });
  label.append(text, control);
  return label;
}

/**
 * Builds the settings panel inside `panel` (an empty, hidden section) and makes `button` open
 * and close it. Returns the block list.
 *
 * @param {BlockList} list the viewer's block list
 * @param {{button: HTMLButtonElement, panel: HTMLElement}} where
 */
export function mountBlockPanel(list, { button, panel }) {
  panel.classList.add('block-panel');
  panel.setAttribute('aria-labelledby', 'block-title');

  const title = el('h2', { id: 'block-title', text: 'Block list' });
  const intro = el('p', {
    className: 'note',
    text: 'Comments you block never fly or show in the lists, on every page of this site in this '
      + 'browser. Names and keywords ignore case and full-width letters; a keyword hides any '
      + 'comment containing it, a name only that exact name.',
  });

  // Typed entries: one form, the kind chosen first.
  const kind = el('select', { id: 'block-kind' });
  for (const [value, name] of [['keyword', 'Keyword'], ['regex', 'Regular expression'], ['author', 'Author']]) {
    kind.append(el('option', { value, text: name }));
  }
  const value = el('input', {
    id: 'block-value', autocomplete: 'off', spellcheck: false, autocapitalize: 'off',
    enterKeyHint: 'done',
  });
  const add = el('button', { id: 'block-add', type: 'submit', text: 'Block' });
  const form = el('form', { id: 'block-form', className: 'row', noValidate: true });
  form.autocomplete = 'off';
  const error = el('p', { id: 'block-error', className: 'error' });
  error.setAttribute('aria-live', 'polite');
  form.append(labelled('Block by', kind), labelled('Text', value, 'grow'), add, error);

  // Positions and colours.
  const modes = el('fieldset', { className: 'block-modes' });
  modes.append(el('legend', { text: 'Hide positions' }));
  const modeBoxes = {};
  for (const mode of MODES) {
    const box = el('input', { type: 'checkbox', id: `block-mode-${mode}`, value: mode });
    box.addEventListener('change', () => list.setMode(mode, box.checked));
    modeBoxes[mode] = box;
    const label = el('label', { className: 'check' });
    label.append(box, MODE_NAMES[mode]);
    modes.append(label);
  }

  const colors = el('fieldset', { className: 'block-colors' });
  colors.append(el('legend', { text: 'Hide colours' }));
  const color = el('input', { type: 'color', id: 'block-color', value: '#ff0000' });
  color.setAttribute('aria-label', 'Colour to hide');
  const addColor = el('button', { type: 'button', id: 'block-color-add', className: 'secondary', text: 'Hide this colour' });
  const colored = el('input', { type: 'checkbox', id: 'block-colored' });
  const coloredLabel = el('label', { className: 'check' });
  coloredLabel.append(colored, 'Every coloured comment (all but white)');
  colors.append(color, addColor, coloredLabel);

  const entriesTitle = el('h3', { text: 'Blocked' });
  const entries = el('ul', { id: 'block-entries', className: 'block-entries' });
  const empty = el('p', { id: 'block-empty', className: 'note', text: 'Nothing is blocked.' });
  const note = el('p', { id: 'block-note', className: 'note' });
  note.setAttribute('aria-live', 'polite');
  const actions = el('div', { className: 'row' });
  const clear = el('button', { type: 'button', id: 'block-clear', className: 'secondary', text: 'Unblock everything' });
  const close = el('button', { type: 'button', id: 'block-close', text: 'Done' });
  actions.append(clear, close);

  panel.replaceChildren(title, intro, form, modes, colors, entriesTitle, empty, entries, note, actions);

  const showError = (text) => { error.textContent = text ?? ''; };

  function placeholder() {
    value.placeholder = PLACEHOLDERS[kind.value] ?? '';
    value.maxLength = LIMITS[kind.value]?.chars ?? 200;
  }

  function entryRow(entryKind, text, label) {
    const li = el('li');
    li.dataset.kind = entryKind;
    li.append(el('span', { className: 'kind', text: label }));
    if (entryKind === 'color') {
      const swatch = el('span', { className: 'swatch' });
      swatch.style.setProperty('--swatch', text);
      li.append(swatch);
    }
    li.append(el('span', { className: 'value', text }));
    const remove = el('button', { type: 'button', className: 'remove secondary', text: 'Remove' });
    remove.setAttribute('aria-label', `Unblock ${label.toLowerCase()} ${text}`);
    remove.addEventListener('click', () => list.remove(entryKind, text));
    li.append(remove);
    return li;
  }

  /** Draws the panel from the list (after every change, here or in another tab). */
  function render() {
    const s = list.settings;
    const rows = [];
    for (const k of Object.keys(KINDS)) for (const v of s[k]) rows.push(entryRow(k, v, KINDS[k]));
    for (const c of s.color) rows.push(entryRow('color', c, 'Colour'));
    entries.replaceChildren(...rows);
    for (const mode of MODES) modeBoxes[mode].checked = s.mode.includes(mode);
    colored.checked = s.colored;
    empty.hidden = rows.length > 0 || s.mode.length > 0 || s.colored;
    clear.disabled = list.empty;
    const count = (rows.length + s.mode.length + (s.colored ? 1 : 0));
    button.textContent = count ? `Block (${count})` : 'Block';
    note.textContent = list.persistent
      ? ''
      : 'Cookies are off in this browser: the list lasts only until this page is left.';
  }

  function toggle(open) {
    panel.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
    if (open) value.focus();
    else button.focus();
  }

  button.setAttribute('aria-controls', panel.id);
  button.setAttribute('aria-expanded', 'false');
  button.addEventListener('click', () => toggle(panel.hidden));
  close.addEventListener('click', () => toggle(false));
  panel.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') toggle(false);
  });

  kind.addEventListener('change', () => { placeholder(); showError(''); });
  value.addEventListener('input', () => showError(''));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const problem = list.add(kind.value, value.value);
    showError(problem);
    if (problem) {
      value.focus();
      return;
    }
    value.value = '';
  });
  addColor.addEventListener('click', () => showError(list.addColor(color.value)));
  colored.addEventListener('change', () => list.setColored(colored.checked));
  clear.addEventListener('click', () => { list.clear(); showError(''); });

  list.addEventListener('change', render);
  placeholder();
  render();
  return list;
}

/** The viewer's block list, with its panel mounted on the page's `#block-open` and `#block-panel`. */
export function blockListForPage() {
  const list = BlockList.load();
  const button = document.getElementById('block-open');
  const panel = document.getElementById('block-panel');
  if (button && panel) mountBlockPanel(list, { button, panel });
  return list;
}
