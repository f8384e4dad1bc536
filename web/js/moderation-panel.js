// The host's moderation of a live room: delete a comment from the chat box (it vanishes from every
// screen), mute its author for a while, keep the room's banned words, and see what was done.
//
// Everything goes through the room's moderator routes with the host token as a bearer token:
//   DELETE /api/rooms/{room}/danmaku/{id}, POST /api/rooms/{room}/mutes {name, minutes},
//   PUT /api/rooms/{room}/banned-words {words}, GET /api/rooms/{room}/moderation.
// The chat box removes a deleted line when the room's `deleted` frame comes back, as every viewer's
// page does; the panel reloads the overview (words, mutes, log) after each action.

import { api, describe, json } from './api.js';
import { clock } from './chat-list.js';

/** Minutes a mute from the chat box lasts. */
export const MUTE_MINUTES = 10;

export class ModerationPanel {
  /**
   * @param {object} parts
   * @param {HTMLTextAreaElement} parts.words the banned words, one per line
   * @param {HTMLFormElement} parts.wordsForm saves them
   * @param {HTMLElement} parts.mutes the list of muted names
   * @param {HTMLElement} parts.log the list of actions, newest first
   * @param {HTMLElement} parts.note where results and errors are said
   * @param {() => ({room: string, token: string}|null)} parts.host the room hosted now
   */
  constructor({ words, wordsForm, mutes, log, note, host }) {
    Object.assign(this, { words, wordsForm, mutes, log, note, host });
    wordsForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.saveWords();
    });
  }

  /** The controls of one chat line: delete the comment, mute its author. */
  actions(item) {
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'line-action';
    del.textContent = 'Delete';
    del.title = 'Delete this comment from every screen';
    del.dataset.action = 'delete';
    del.addEventListener('click', () => this.remove(item, del));
    const mute = document.createElement('button');
    mute.type = 'button';
    mute.className = 'line-action';
    mute.textContent = 'Mute';
    mute.title = `Mute ${item.author} for ${MUTE_MINUTES} minutes`;
    mute.dataset.action = 'mute';
    mute.addEventListener('click', () => this.mute(item.author, MUTE_MINUTES));
    return [del, mute];
  }

  /** Loads the room's banned words, mutes and log. */
  async refresh() {
    const host = this.host();
    if (!host) return;
    try {
      const view = await json(await api(this.path(host, 'moderation'), { token: host.token }));
      if (document.activeElement !== this.words) this.words.value = (view.banned_words ?? []).join('\n');
      this.showMutes(view.mutes ?? []);
      this.showLog(view.log ?? []);
    } catch (err) {
      this.say(describe(err), true);
    }
  }

  // ---- inside ----

  path(host, rest) {
    return `/api/rooms/${encodeURIComponent(host.room)}/${rest}`;
  }

  say(text, error = false) {
    this.note.textContent = text;
    this.note.classList.toggle('error', error);
  }

  async remove(item, button) {
    const host = this.host();
    if (!host) return;
    button.disabled = true;
    try {
      await api(this.path(host, `danmaku/${item.id}`), { method: 'DELETE', token: host.token });
      this.say(`Deleted “${item.text}”.`);
    } catch (err) {
      button.disabled = false;
      this.say(describe(err), true);
    }
    this.refresh();
  }

  async mute(name, minutes) {
    const host = this.host();
    if (!host || typeof name !== 'string') return;
    try {
      await api(this.path(host, 'mutes'), { method: 'POST', token: host.token, body: { name, minutes } });
      this.say(minutes > 0 ? `${name} is muted for ${minutes} minutes.` : `${name} may write again.`);
    } catch (err) {
      this.say(describe(err), true);
    }
    this.refresh();
  }

  async saveWords() {
    const host = this.host();
    if (!host) return;
    const words = this.words.value.split('\n').map((w) => w.trim()).filter(Boolean);
    try {
      const saved = await json(await api(this.path(host, 'banned-words'), {
        method: 'PUT', token: host.token, body: { words },
      }));
      this.words.value = (saved.words ?? []).join('\n');
      this.say(`Banned words saved (${saved.words?.length ?? 0}).`);
    } catch (err) {
      this.say(describe(err), true);
    }
    this.refresh();
  }

  showMutes(mutes) {
    const lines = mutes.map((m) => {
      const li = document.createElement('li');
      const who = document.createElement('span');
      who.textContent = `${m.name} until ${clock(m.until)}`;
      const lift = document.createElement('button');
      lift.type = 'button';
      lift.className = 'line-action';
      lift.textContent = 'Lift';
      lift.addEventListener('click', () => this.mute(m.name, 0));
      li.append(who, lift);
      return li;
    });
    this.mutes.replaceChildren(...lines);
  }

  showLog(entries) {
    const lines = entries.map((e) => {
      const li = document.createElement('li');
      const when = document.createElement('time');
      when.dateTime = typeof e.at === 'string' ? e.at : '';
      when.textContent = clock(e.at);
      const what = document.createElement('span');
      const detail = e.detail ? ` (${e.detail})` : '';
      what.textContent = ` ${e.actor} ${String(e.action).replace('_', ' ')} ${e.target}${detail}`;
      li.append(when, what);
      return li;
    });
    this.log.replaceChildren(...lines);
  }
}
