// The small HTTP API helper shared by the pages: JSON requests, never from the cache, and the
// server's error body `{"error": {"code", "message"}}` turned into an ApiError.

/**
 * A failed API call: `code` is the server's error code, or `network` (no answer), `bad_answer` (an
 * answer that is not what was asked for) or `http_<status>` (an error without the JSON body);
 * `status` is the HTTP status (0 without an answer); `retryAfterMs` is the server's `Retry-After`,
 * or null when it sent none.
 */
export class ApiError extends Error {
  /**
   * @param {string} code stable code
   * @param {string} message a sentence for people
   * @param {number} [status] the HTTP status
   * @param {number|null} [retryAfterMs] when to try again, from `Retry-After`
   */
  constructor(code, message, status = 0, retryAfterMs = null) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * The `{code, message}` of an answer's JSON error body `{"error": {"code", "message"}}`; either is
 * null when the body does not say (not JSON, or another shape). Reads the body.
 */
export async function readError(res) {
  let error = null;
  try { error = (await res.json())?.error ?? null; } catch { /* not JSON */ }
  return {
    code: typeof error?.code === 'string' ? error.code : null,
    message: typeof error?.message === 'string' ? error.message : null,
  };
}

/**
 * Calls the API; resolves with the Response when it is a success, throws an ApiError otherwise.
 * `body` is sent as JSON, `token` as a bearer token; `onResponse` sees every answer, success or not,
 * before its body is read. An aborted call (`signal`) rejects with the browser's AbortError.
 */
export async function api(path, { method = 'GET', body, token, accept = 'application/json', signal, onResponse } = {}) {
  const headers = { Accept: accept };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError('network', 'Could not reach the server.');
  }
  onResponse?.(res);
  if (res.ok) return res;
  const { code, message } = await readError(res);
  const retry = Number(res.headers.get('Retry-After'));
  throw new ApiError(
    code ?? `http_${res.status}`,
    message ?? `The server answered ${res.status}.`,
    res.status,
    Number.isFinite(retry) && retry > 0 ? retry * 1000 : null,
  );
}

/** The JSON of a successful answer; an ApiError `bad_answer` when it is not JSON. */
export async function json(res) {
  let data;
  try { data = await res.json(); } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError('bad_answer', 'The server sent an answer that is not JSON.');
  }
  if (data === null) throw new ApiError('bad_answer', 'The server sent an answer that is not JSON.');
  return data;
}

/** An error as a sentence with its code after it: `message (code)`. */
export const describe = (err) => `${err.message} (${err.code ?? 'error'})`;
