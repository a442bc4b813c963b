/**
 * The web chat page's style sheet, as a string served at `/style.css`. System fonts only, light
 * and dark schemes from `prefers-color-scheme`, a settings panel that folds away on narrow screens.
 *
 * @module
 */

/** The style sheet served at `/style.css`. */
export const STYLE_CSS: string = String.raw`:root {
  --bg: #f6f7f9; --panel: #ffffff; --text: #1b1f24; --muted: #667085; --border: #e3e6ea;
  --accent: #3b5bdb; --accent-text: #ffffff; --user: #e7edff; --assistant: #ffffff;
  --tool: #f3f6f2; --tool-border: #cfe0c9; --error: #fdecec; --error-text: #a61b1b;
  --radius: 12px; --shadow: 0 1px 2px rgba(16, 24, 40, 0.06);
  color-scheme: light dark;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #14161a; --panel: #1c1f24; --text: #e6e8eb; --muted: #98a2b3; --border: #2c3038;
    --accent: #6d8cff; --accent-text: #0b0d10; --user: #26304d; --assistant: #1c1f24;
    --tool: #1d2620; --tool-border: #34503b; --error: #3a1d1d; --error-text: #ffb4b4;
  }
}
* { box-sizing: border-box; }
html, body { height: 100%; margin: 0; }
body {
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans CJK SC", sans-serif;
  background: var(--bg); color: var(--text);
  display: grid; grid-template-rows: auto minmax(0, 1fr); grid-template-columns: 300px minmax(0, 1fr);
  grid-template-areas: "top top" "side main";
}
header {
  grid-area: top; display: flex; align-items: center; gap: 12px; padding: 10px 18px;
  background: var(--panel); border-bottom: 1px solid var(--border);
}
.brand { font-weight: 650; letter-spacing: 0.2px; display: flex; align-items: center; gap: 8px; }
.brand img { width: 22px; height: 22px; }
.model { color: var(--muted); font-size: 13px; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
.spacer { flex: 1; }
.status {
  font-size: 13px; color: var(--muted); display: inline-flex; align-items: center; gap: 6px;
  min-width: 0; white-space: nowrap; overflow: hidden;
}
header button { flex: none; white-space: nowrap; }
.status::before {
  content: ""; flex: none; width: 8px; height: 8px; border-radius: 50%; background: var(--muted);
}
.status.ok::before { background: #2f9e44; }
.status.busy::before { background: #f08c00; }
.status.error::before { background: #e03131; }
.status.error { color: var(--error-text); }
button {
  font: inherit; border: 1px solid var(--border); background: var(--panel); color: var(--text);
  border-radius: 8px; padding: 6px 12px; cursor: pointer;
}
button:hover { border-color: var(--accent); }
button.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-text); }
button.danger { background: #e03131; border-color: #e03131; color: #fff; }
#toggle-settings { display: none; }
aside {
  grid-area: side; background: var(--panel); border-right: 1px solid var(--border);
  padding: 16px; overflow-y: auto; display: flex; flex-direction: column; gap: 16px;
}
aside h2 { font-size: 12px; text-transform: uppercase; letter-spacing: 0.8px; color: var(--muted); margin: 0; }
label { display: flex; flex-direction: column; gap: 6px; font-size: 13px; font-weight: 550; }
.hint { font-weight: 400; color: var(--muted); font-size: 12px; }
#tools-note { margin: 4px 0 0 26px; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
.row { display: flex; align-items: center; justify-content: space-between; gap: 8px; }
textarea, input[type="number"], input[type="password"], input[type="text"] {
  font: inherit; color: var(--text); background: var(--bg); border: 1px solid var(--border);
  border-radius: 8px; padding: 8px 10px; width: 100%; font-weight: 400;
}
textarea:focus, input:focus { outline: 2px solid color-mix(in srgb, var(--accent) 40%, transparent); border-color: var(--accent); }
#system { min-height: 90px; resize: vertical; }
input[type="range"] { width: 100%; accent-color: var(--accent); }
.check { flex-direction: row; align-items: center; gap: 8px; font-weight: 500; }
main { grid-area: main; display: flex; flex-direction: column; min-height: 0; min-width: 0; }
#log { flex: 1; overflow-y: auto; padding: 24px 0 12px; }
.inner { max-width: 820px; margin: 0 auto; padding: 0 20px; }
#empty { color: var(--muted); text-align: center; margin-top: 18vh; }
#empty h1 { color: var(--text); font-size: 22px; margin-bottom: 4px; }
.msg { max-width: 820px; margin: 0 auto 16px; padding: 0 20px; display: flex; flex-direction: column; }
.msg .who { font-size: 12px; color: var(--muted); margin: 0 4px 4px; }
.bubble {
  border: 1px solid var(--border); border-radius: var(--radius); padding: 10px 14px;
  background: var(--assistant); box-shadow: var(--shadow); max-width: 100%;
}
.msg.user { align-items: flex-end; }
.msg.user .bubble { background: var(--user); border-color: transparent; }
.msg.error .bubble { background: var(--error); color: var(--error-text); border-color: transparent; }
.content { white-space: pre-wrap; overflow-wrap: anywhere; }
.msg.streaming .content::after {
  content: ""; display: inline-block; width: 7px; height: 1em; margin-left: 2px;
  vertical-align: text-bottom; background: var(--accent); animation: blink 1s steps(2) infinite;
}
@keyframes blink { 50% { opacity: 0; } }
.tool-call {
  margin-top: 8px; border: 1px solid var(--tool-border); background: var(--tool);
  border-radius: 10px; padding: 8px 10px;
}
.content:not(:empty) + .tool-call { margin-top: 10px; }
.tool-head { display: flex; align-items: center; gap: 8px; font-size: 13px; }
.tool-label { color: var(--muted); }
.tool-name { font-weight: 650; }
pre { margin: 6px 0 0; font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap; overflow-wrap: anywhere; }
.tool-result { margin-top: 8px; padding-top: 6px; border-top: 1px dashed var(--tool-border); }
.tool-result-label { font-size: 12px; color: var(--muted); }
.reasoning { margin-bottom: 8px; color: var(--muted); font-size: 13.5px; }
.reasoning summary { cursor: pointer; user-select: none; width: fit-content; }
.reasoning-text {
  white-space: pre-wrap; overflow-wrap: anywhere; margin: 6px 0 0; padding-left: 10px;
  border-left: 2px solid var(--border);
}
.meta { margin-top: 6px; font-size: 11.5px; color: var(--muted); }
#composer { border-top: 1px solid var(--border); background: var(--panel); padding: 12px 0 16px; }
#composer .inner { display: flex; gap: 10px; align-items: flex-end; }
#input { resize: none; min-height: 44px; max-height: 200px; line-height: 1.45; }
#composer button { height: 44px; min-width: 84px; }
.footnote { max-width: 820px; margin: 6px auto 0; padding: 0 20px; font-size: 11.5px; color: var(--muted); }
[hidden] { display: none !important; }
@media (max-width: 760px) {
  body { grid-template-columns: minmax(0, 1fr); grid-template-areas: "top" "main"; }
  header { padding: 8px 12px; gap: 8px; }
  .brand { font-size: 14px; }
  .status { font-size: 0; gap: 0; } /* just the dot; the text stays in the title */
  header button { padding: 6px 9px; }
  .model { display: none; }
  #toggle-settings { display: inline-block; }
  .msg, .inner, .footnote { padding: 0 12px; }
  #composer button { min-width: 64px; }
  aside { display: none; position: fixed; top: 50px; left: 0; right: 0; z-index: 5; border-bottom: 1px solid var(--border); }
  aside.open { display: flex; }
}
`;
