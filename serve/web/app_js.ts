/**
 * The web chat page's script, as a string served at `/app.js`. Plain browser JavaScript (no build
 * step, no dependencies): it keeps the conversation, streams replies from
 * `/v1/chat/completions` with `fetch` and a small server-sent-events parser, shows a reply's
 * reasoning (`delta.reasoning_content`) folded in a `<details>` above the answer, shows tool calls as
 * blocks, runs the server's demo tools through `/api/tools/run` and continues the conversation
 * with their results (at most {@linkcode MAX_TOOL_ROUNDS} rounds per message).
 *
 * Kept as a TypeScript module so the page works when this package is imported from elsewhere (no
 * file reads at run time). The source avoids backticks and dollar-brace so it can sit in a raw
 * template literal unchanged.
 *
 * @module
 */

/** Most model -> tool -> model rounds the page runs for one user message. */
export const MAX_TOOL_ROUNDS = 4;

/** The script served at `/app.js`. */
export const APP_JS: string = String.raw`"use strict";
(function () {
  var MAX_TOOL_ROUNDS = ` + String(MAX_TOOL_ROUNDS) + String.raw`;
  var $ = function (id) { return document.getElementById(id); };
  var els = {
    model: $("model-name"), status: $("status"), log: $("log"), empty: $("empty"),
    form: $("composer"), input: $("input"), send: $("send"), stop: $("stop"),
    reset: $("new-chat"), system: $("system"), temperature: $("temperature"),
    temperatureValue: $("temperature-value"), maxTokens: $("max-tokens"),
    tools: $("use-tools"), toolsRow: $("tools-row"), toolsNote: $("tools-note"),
    apiKey: $("api-key"), keyRow: $("key-row"), settings: $("settings"),
    toggleSettings: $("toggle-settings")
  };
  var state = { messages: [], modelId: null, toolSchemas: [], busy: false, abort: null };

  // ---- settings, kept in localStorage -----------------------------------------------------
  var SETTINGS_KEY = "minideepseek.settings";
  function loadSettings() {
    try {
      var s = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}");
      if (typeof s.system === "string") els.system.value = s.system;
      if (typeof s.temperature === "number") els.temperature.value = String(s.temperature);
      if (typeof s.maxTokens === "number") els.maxTokens.value = String(s.maxTokens);
      if (typeof s.tools === "boolean") els.tools.checked = s.tools;
      if (typeof s.apiKey === "string") els.apiKey.value = s.apiKey;
    } catch (e) { /* a corrupt entry just means defaults */ }
    showTemperature();
  }
  function saveSettings() {
    try {
      localStorage.setItem(SETTINGS_KEY, JSON.stringify({
        system: els.system.value, temperature: Number(els.temperature.value),
        maxTokens: Number(els.maxTokens.value), tools: els.tools.checked, apiKey: els.apiKey.value
      }));
    } catch (e) { /* private mode: settings last for this page only */ }
  }
  function showTemperature() { els.temperatureValue.textContent = Number(els.temperature.value).toFixed(2); }

  function headers() {
    var h = { "content-type": "application/json" };
    if (els.apiKey.value.trim()) h.authorization = "Bearer " + els.apiKey.value.trim();
    return h;
  }
  function setStatus(text, kind) {
    els.status.textContent = text;
    els.status.title = text;
    els.status.className = "status " + (kind || "");
  }

  // ---- rendering ----------------------------------------------------------------------------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function scrollDown() { els.log.scrollTop = els.log.scrollHeight; }
  function addBubble(role, text) {
    els.empty.hidden = true;
    var row = el("div", "msg " + role);
    var who = el("div", "who", role === "user" ? "You" : role === "assistant" ? "Assistant" : role);
    var body = el("div", "bubble");
    var content = el("div", "content", text || "");
    body.appendChild(content);
    row.appendChild(who);
    row.appendChild(body);
    els.log.appendChild(row);
    scrollDown();
    return { row: row, body: body, content: content };
  }
  // The reasoning of a reply: a folded <details> above the answer, filled as it streams (as text).
  function reasoningBlock(bubble) {
    var block = el("details", "reasoning");
    var summary = el("summary", "", "Thinking\u2026");
    var text = el("div", "reasoning-text");
    block.appendChild(summary);
    block.appendChild(text);
    bubble.body.insertBefore(block, bubble.content);
    return { block: block, summary: summary, text: text };
  }
  function prettyArgs(args) {
    try { return JSON.stringify(JSON.parse(args), null, 2); } catch (e) { return args; }
  }
  function toolCallBlock(bubble, call) {
    var block = el("div", "tool-call");
    var head = el("div", "tool-head");
    head.appendChild(el("span", "tool-icon", "\u2699"));
    head.appendChild(el("span", "tool-label", "Tool call"));
    var name = el("code", "tool-name", call.name || "");
    head.appendChild(name);
    var args = el("pre", "tool-args", prettyArgs(call.arguments || ""));
    var result = el("div", "tool-result");
    result.hidden = true;
    block.appendChild(head);
    block.appendChild(args);
    block.appendChild(result);
    bubble.body.appendChild(block);
    scrollDown();
    return { block: block, name: name, args: args, result: result };
  }
  function showToolResult(view, text) {
    view.result.hidden = false;
    view.result.textContent = "";
    view.result.appendChild(el("span", "tool-result-label", "Result"));
    view.result.appendChild(el("pre", "tool-result-text", prettyArgs(text)));
    scrollDown();
  }
  function addError(text) {
    var b = addBubble("error", text);
    b.row.querySelector(".who").textContent = "Error";
  }

  // ---- server-sent events -------------------------------------------------------------------
  async function* readEvents(response) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buf = "";
    for (;;) {
      var r = await reader.read();
      if (r.done) break;
      buf += decoder.decode(r.value, { stream: true });
      var cut;
      while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
        var raw = buf.slice(0, cut);
        buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
        var data = raw.split(/\r?\n/).filter(function (l) { return l.indexOf("data:") === 0; })
          .map(function (l) { return l.slice(5).replace(/^ /, ""); }).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }

  async function errorText(res) {
    try {
      var j = await res.json();
      if (j && j.error && j.error.message) return j.error.message + " (HTTP " + res.status + ")";
    } catch (e) { /* not JSON */ }
    return "HTTP " + res.status + " " + res.statusText;
  }

  // ---- one model turn: stream it into a bubble ----------------------------------------------
  async function streamTurn(signal) {
    var body = {
      model: state.modelId || undefined,
      messages: (els.system.value.trim() ? [{ role: "system", content: els.system.value.trim() }] : [])
        .concat(state.messages),
      stream: true,
      stream_options: { include_usage: true },
      temperature: Number(els.temperature.value),
      max_tokens: Math.max(1, Math.floor(Number(els.maxTokens.value) || 256))
    };
    if (els.tools.checked && state.toolSchemas.length > 0) body.tools = state.toolSchemas;
    var bubble = addBubble("assistant", "");
    bubble.row.classList.add("streaming");
    var send = function () {
      return fetch("/v1/chat/completions", {
        method: "POST", headers: headers(), body: JSON.stringify(body), signal: signal
      });
    };
    var res = await send();
    if (res.status === 400) {
      // "Max tokens" is a cap: past what the context leaves, ask for the rest of the context.
      var err = await res.clone().json().catch(function () { return null; });
      if (err && err.error && err.error.code === "context_length_exceeded" && err.error.param === "max_tokens") {
        delete body.max_tokens;
        res = await send();
      }
    }
    if (!res.ok) {
      bubble.row.remove();
      throw new Error(await errorText(res));
    }
    var text = "", reasoning = "", thought = null, calls = [], views = [], finish = null, usage = null;
    try {
      for await (var chunk of readEvents(res)) {
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        var choice = chunk.choices && chunk.choices[0];
        if (!choice) continue;
        var d = choice.delta || {};
        if (d.reasoning_content) {
          reasoning += d.reasoning_content;
          thought = thought || reasoningBlock(bubble);
          thought.text.textContent = reasoning;
          scrollDown();
        }
        if (thought && (d.content || d.tool_calls)) thought.summary.textContent = "Thought";
        if (d.content) {
          text += d.content;
          bubble.content.textContent = text;
          scrollDown();
        }
        (d.tool_calls || []).forEach(function (tc) {
          var c = calls[tc.index] || (calls[tc.index] = { id: "", name: "", arguments: "" });
          if (tc.id) c.id = tc.id;
          if (tc.function && tc.function.name) c.name += tc.function.name;
          if (tc.function && tc.function.arguments) c.arguments += tc.function.arguments;
          var v = views[tc.index] || (views[tc.index] = toolCallBlock(bubble, c));
          v.name.textContent = c.name;
          v.args.textContent = prettyArgs(c.arguments);
        });
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    } finally {
      bubble.row.classList.remove("streaming");
      if (thought) thought.summary.textContent = "Thought";
      if (!text && calls.length === 0 && (!thought || signal.aborted)) {
        bubble.content.textContent = signal.aborted ? "(stopped)" : "(empty reply)";
      }
      if (!text) bubble.content.hidden = calls.length > 0 || (thought !== null && !signal.aborted);
    }
    // The answer and tool calls only: earlier turns' reasoning is not sent back (DeepSeek-R1).
    var msg = { role: "assistant", content: text || null };
    if (calls.length > 0) {
      msg.tool_calls = calls.map(function (c) {
        return { id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } };
      });
    }
    state.messages.push(msg);
    if (usage) {
      var meta = el("div", "meta", usage.prompt_tokens + " prompt + " + usage.completion_tokens +
        " completion tokens" + (finish && finish !== "stop" ? " \u00b7 " + finish : ""));
      bubble.body.appendChild(meta);
    }
    return { finish: finish, calls: calls, views: views };
  }

  async function runTool(call) {
    var res = await fetch("/api/tools/run", {
      method: "POST", headers: headers(), body: JSON.stringify({ name: call.name, arguments: call.arguments })
    });
    if (!res.ok) return JSON.stringify({ error: await errorText(res) });
    return (await res.json()).content;
  }

  async function send(text) {
    state.messages.push({ role: "user", content: text });
    addBubble("user", text);
    setBusy(true);
    var controller = new AbortController();
    state.abort = controller;
    try {
      for (var round = 0; round <= MAX_TOOL_ROUNDS; round++) {
        var turn = await streamTurn(controller.signal);
        if (turn.finish !== "tool_calls" || !els.tools.checked || round === MAX_TOOL_ROUNDS) break;
        for (var i = 0; i < turn.calls.length; i++) {
          var content = await runTool(turn.calls[i]);
          showToolResult(turn.views[i], content);
          state.messages.push({ role: "tool", tool_call_id: turn.calls[i].id, content: content });
        }
      }
    } catch (e) {
      if (!controller.signal.aborted) addError(String(e && e.message || e));
    } finally {
      state.abort = null;
      setBusy(false);
      els.input.focus();
    }
  }

  function setBusy(busy) {
    state.busy = busy;
    els.send.hidden = busy;
    els.stop.hidden = !busy;
    els.input.disabled = false;
    setStatus(busy ? "generating\u2026" : "ready", busy ? "busy" : "ok");
  }

  // ---- wiring -------------------------------------------------------------------------------
  els.form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = els.input.value.trim();
    if (!text || state.busy) return;
    els.input.value = "";
    autosize();
    send(text);
  });
  els.input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      els.form.requestSubmit();
    }
  });
  function autosize() {
    els.input.style.height = "auto";
    els.input.style.height = Math.min(els.input.scrollHeight, 200) + "px";
  }
  els.input.addEventListener("input", autosize);
  els.stop.addEventListener("click", function () { if (state.abort) state.abort.abort(); });
  els.reset.addEventListener("click", function () {
    if (state.abort) state.abort.abort();
    state.messages = [];
    Array.prototype.slice.call(els.log.querySelectorAll(".msg")).forEach(function (m) { m.remove(); });
    els.empty.hidden = false;
    els.input.focus();
  });
  els.temperature.addEventListener("input", function () { showTemperature(); saveSettings(); });
  [els.system, els.maxTokens, els.tools, els.apiKey].forEach(function (e) {
    e.addEventListener("change", function () { saveSettings(); if (e === els.apiKey) connect(); });
  });
  els.toggleSettings.addEventListener("click", function () {
    var open = els.settings.classList.toggle("open");
    els.toggleSettings.setAttribute("aria-expanded", String(open));
  });

  async function connect() {
    try {
      var health = await (await fetch("/health")).json();
      els.keyRow.hidden = !health.auth && !els.apiKey.value;
      state.modelId = health.model;
      els.model.textContent = health.model;
      var models = await fetch("/v1/models", { headers: headers() });
      if (models.status === 401) {
        setStatus("API key needed", "error");
        els.keyRow.hidden = false;
        els.settings.classList.add("open");
        return;
      }
      var tools = await fetch("/api/tools", { headers: headers() });
      state.toolSchemas = tools.ok ? (await tools.json()).tools : [];
      els.toolsRow.hidden = state.toolSchemas.length === 0;
      els.toolsNote.textContent = state.toolSchemas.map(function (t) { return t.function.name; }).join(", ");
      setStatus("ready", "ok");
    } catch (e) {
      setStatus("server unreachable", "error");
    }
  }

  loadSettings();
  connect();
  els.input.focus();
})();
`;
