/**
 * The web chat page served at `/`: HTML, script, style sheet and icon as strings, so the page
 * needs no files at run time and no network beyond this server (no CDN, no web fonts).
 *
 * Features: streamed replies, a reply's reasoning folded in a "Thought" `<details>` above it,
 * multi-turn history, a system prompt, temperature and max-tokens
 * controls, tool calls rendered as blocks (name and arguments, then the result when the server's
 * demo tools run them), a stop button, an API-key field when the server wants one.
 *
 * @module
 */

export { APP_JS, MAX_TOOL_ROUNDS } from "./app_js.ts";
export { STYLE_CSS } from "./style_css.ts";

/** The icon served at `/favicon.svg`: a small whale-blue speech bubble. */
export const FAVICON_SVG: string =
  `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect x="2" y="3" width="28" ` +
  `height="21" rx="7" fill="#3b5bdb"/><path d="M9 24l-2 6 8-6z" fill="#3b5bdb"/><circle cx="11" ` +
  `cy="13.5" r="2" fill="#fff"/><circle cx="16" cy="13.5" r="2" fill="#fff"/><circle cx="21" ` +
  `cy="13.5" r="2" fill="#fff"/></svg>`;

/** The page served at `/`. */
export const INDEX_HTML: string = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MiniDeepSeek chat</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/style.css">
</head>
<body>
<header>
  <div class="brand"><img src="/favicon.svg" alt="">MiniDeepSeek</div>
  <span class="model" id="model-name">connecting...</span>
  <span class="spacer"></span>
  <span class="status" id="status">connecting</span>
  <button type="button" id="toggle-settings" aria-controls="settings" aria-expanded="false">Settings</button>
  <button type="button" id="new-chat">New chat</button>
</header>
<aside id="settings">
  <h2>Settings</h2>
  <label for="system">System prompt
    <textarea id="system" placeholder="You are a helpful assistant."></textarea>
  </label>
  <label for="temperature">
    <span class="row"><span>Temperature</span><span class="hint" id="temperature-value">0.70</span></span>
    <input id="temperature" type="range" min="0" max="2" step="0.05" value="0.7">
    <span class="hint">0 always picks the most likely token.</span>
  </label>
  <label for="max-tokens">Max tokens
    <input id="max-tokens" type="number" min="1" max="32768" step="1" value="256">
  </label>
  <div id="tools-row" hidden>
    <label class="check" for="use-tools"><input id="use-tools" type="checkbox" checked>Use tools</label>
    <div class="hint" id="tools-note"></div>
  </div>
  <label for="api-key" id="key-row" hidden>API key
    <input id="api-key" type="password" autocomplete="off" placeholder="the server's --api-key">
  </label>
</aside>
<main>
  <div id="log">
    <div id="empty" class="inner">
      <h1>Chat with MiniDeepSeek</h1>
      <p>Type a message below. Enter sends, Shift+Enter starts a new line.</p>
    </div>
  </div>
  <form id="composer" autocomplete="off">
    <div class="inner">
      <textarea id="input" rows="1" placeholder="Send a message" aria-label="Message"></textarea>
      <button type="submit" id="send" class="primary">Send</button>
      <button type="button" id="stop" class="danger" hidden>Stop</button>
    </div>
    <div class="footnote">A small model trained from scratch: expect mistakes.</div>
  </form>
</main>
<script src="/app.js"></script>
</body>
</html>
`;
