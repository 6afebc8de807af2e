// The Causeway web console: reads /api/... on the admin port it was served from and fills
// index.html. Read-only. Plain JavaScript, no framework, no build step.
//
// Every value from the store reaches the page as text (textContent, SVG text nodes,
// attributes set one by one), never as markup: event names and payloads are the writers' data.
'use strict';

const EVENTS_KEPT_MAX = 200; // rows the recent-events table keeps while the tail adds to it
const STATE_REFRESH_MS = 2000;
const GATES_REFRESH_MS = 10000;
const PAYLOAD_PREVIEW_CHARS = 90;
const SVG_NS = 'http://www.w3.org/2000/svg';

const page = {
  events: [], // newest first
  oldest: 0, // the lowest position shown, 0 when none
  newest: 0, // the highest position shown
  head: 0,
  tail: null, // the EventSource, while live
  paused: false,
  eventId: null, // the event shown in the detail panel
};

// ---- small helpers -------------------------------------------------------------------------

function $(id) {
  return document.getElementById(id);
}

// An element with attributes and children; strings become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'onclick') node.addEventListener('click', value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === 'onclick') node.addEventListener('click', value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

function showError(err) {
  const line = $('error-line');
  line.textContent = err ? String(err.message || err) : '';
  line.hidden = !err;
}

function time(timestamp) {
  if (!timestamp) return '';
  // `wall` is RFC 3339 in UTC with milliseconds, as the server writes it.
  const text = String(timestamp.wall).replace('T', ' ').replace('Z', '');
  return timestamp.logical ? `${text} +${timestamp.logical}` : text;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function short(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

function shortId(id) {
  return id ? `${id.slice(0, 8)}…${id.slice(-4)}` : '';
}

// The payload as a one-line preview.
function preview(event) {
  if (event.payload === null) return `(${bytes(event.payload_bytes)}, binary)`;
  if (event.payload_bytes === 0) return '(empty)';
  return short(event.payload.replace(/\s+/g, ' '), PAYLOAD_PREVIEW_CHARS);
}

// The payload in full: JSON pretty-printed, other text as it is, binary as its size.
function payloadText(event) {
  if (event.payload === null) return `(${event.payload_bytes} bytes, not UTF-8)`;
  if (event.payload_bytes === 0) return '(empty)';
  let text = event.payload;
  if (!event.payload_truncated) {
    try {
      text = JSON.stringify(JSON.parse(event.payload), null, 2);
    } catch (_) {
      text = event.payload;
    }
  }
  if (event.payload_truncated) text += `\n… (cut; ${event.payload_bytes} bytes in all)`;
  return text;
}

function facts(dl, pairs) {
  clear(dl);
  for (const [name, value, cls] of pairs) {
    dl.append(el('div', {}, el('dt', {}, name), el('dd', { class: cls }, value)));
  }
}

// ---- store state and gates -----------------------------------------------------------------

async function loadState() {
  try {
    const state = await api('api/state');
    page.head = Math.max(page.head, state.head);
    $('head').textContent = String(state.head);
    $('digest').textContent = short(state.digest, 18);
    $('digest').title = state.digest;
    const ready = $('ready');
    ready.textContent = state.ready ? 'ready' : 'not ready';
    ready.dataset.ready = state.ready ? 'yes' : 'no';
    ready.title = state.not_ready_reason || 'the node serves requests';
    const cluster = state.cluster;
    $('node').textContent = cluster
      ? `node ${cluster.node_id}, ${cluster.role.replace('NODE_ROLE_', '').toLowerCase()}`
      : 'single node';
    const pairs = [
      ['head position', String(state.head), 'mono'],
      ['log digest', state.digest, 'mono wrap'],
      ['segments', `${state.segments} (${bytes(state.segment_bytes)})`],
      ['index memory', bytes(state.index_bytes)],
      ['record denials', state.record_denials ? 'on' : 'off'],
      ['subscriptions', String(state.subscriptions)],
      ['version', state.version],
    ];
    if (cluster) {
      pairs.push(['term', String(cluster.term)]);
      pairs.push(['leader', cluster.leader_id ? `${cluster.leader_id} at ${cluster.leader_address}` : 'none known']);
      pairs.push(['applied index', String(cluster.applied_index)]);
    }
    facts($('store-facts'), pairs);
    const problem = $('store-problem');
    problem.textContent = state.not_ready_reason || '';
    problem.hidden = state.ready;
    showError(null);
  } catch (err) {
    $('ready').textContent = 'unreachable';
    $('ready').dataset.ready = 'no';
    showError(err);
  }
}

function ruleText(rule) {
  if (!rule) return 'built in (compiled into the server)';
  switch (rule.kind) {
    case 'cel': return rule.expression;
    case 'unique_tag': return `unique tag with prefix ${rule.prefix}`;
    case 'allowed_types': return `allowed types: ${rule.types.join(', ')}`;
    case 'causation_exists': return 'every causation parent exists';
    case 'rate_limit': return `at most ${rule.max_events} events per ${rule.window_ms} ms`;
    case 'size_limit': return `payloads of at most ${rule.max_payload_bytes} bytes`;
    default: return rule.kind;
  }
}

async function loadGates() {
  try {
    const { gates } = await api('api/gates');
    const list = clear($('gates'));
    for (const gate of gates) {
      const scope = gate.scopes.length ? gate.scopes.join(', ') : 'every scope';
      const types = gate.types.length ? gate.types.join(', ') : 'every type';
      list.append(
        el('li', { 'data-name': gate.name },
          el('div', { class: 'gate-name' }, gate.name, el('span', { class: 'gate-kind' }, gate.rule ? gate.rule.kind : 'built-in')),
          el('div', { class: 'gate-where' }, `${scope} · ${types} · since position ${gate.version}`),
          el('code', { class: 'gate-rule' }, ruleText(gate.rule))));
    }
    $('gates-count').textContent = String(gates.length);
    $('gates-empty').hidden = gates.length > 0;
  } catch (err) {
    showError(err);
  }
}

// ---- recent events and the live tail --------------------------------------------------------

function eventRow(event, fresh) {
  const row = el('tr', { 'data-position': event.position, 'data-id': event.id, class: fresh ? 'fresh' : null, tabindex: 0 },
    el('td', { class: 'num mono' }, event.position),
    el('td', { class: 'mono dim' }, time(event.timestamp)),
    el('td', {}, el('span', { class: 'scope' }, event.scope), ' / ',
      el('a', { href: entityHash(event.scope, event.entity), class: 'entity' }, event.entity)),
    el('td', { class: 'num mono' }, event.version),
    el('td', { class: 'type' }, event.type),
    el('td', { class: 'mono payload-preview' }, preview(event)));
  row.addEventListener('click', (click) => {
    if (click.target.closest('a')) return;
    location.hash = eventHash(event.id);
  });
  row.addEventListener('keydown', (key) => {
    if (key.key === 'Enter') location.hash = eventHash(event.id);
  });
  if (event.id === page.eventId) row.classList.add('selected');
  return row;
}

function renderEvents(freshPositions) {
  const body = clear($('events').tBodies[0]);
  for (const event of page.events) body.append(eventRow(event, freshPositions && freshPositions.has(event.position)));
  $('events-empty').hidden = page.events.length > 0;
  $('events-older').disabled = page.oldest <= 1;
  $('events-note').textContent = page.events.length
    ? `positions ${page.oldest} to ${page.newest} of ${page.head}`
    : '';
}

// On a busy log the tail brings many events a second: they are drawn once per frame.
let pendingFresh = null;
function scheduleRender(position) {
  if (pendingFresh === null) {
    pendingFresh = new Set();
    requestAnimationFrame(() => {
      const fresh = pendingFresh;
      pendingFresh = null;
      renderEvents(fresh);
    });
  }
  pendingFresh.add(position);
}

async function loadEvents() {
  try {
    const batch = await api('api/events?direction=backward&limit=50');
    page.head = Math.max(page.head, batch.head);
    page.events = batch.events;
    page.newest = batch.events.length ? batch.events[0].position : batch.head;
    page.oldest = batch.events.length ? batch.events[batch.events.length - 1].position : 0;
    renderEvents();
    startTail(page.newest + 1);
  } catch (err) {
    showError(err);
  }
}

async function loadOlder() {
  if (page.oldest <= 1) return;
  try {
    const batch = await api(`api/events?direction=backward&limit=50&from=${page.oldest - 1}`);
    page.events = page.events.concat(batch.events);
    if (batch.events.length) page.oldest = batch.events[batch.events.length - 1].position;
    renderEvents();
  } catch (err) {
    showError(err);
  }
}

function tailStatus(state, text) {
  const status = $('tail-status');
  status.dataset.state = state;
  status.textContent = text;
  $('tail-toggle').textContent = state === 'off' ? 'Go live' : 'Pause';
}

// Follows the log from `from` with server-sent events. The browser reconnects by itself
// after a dropped connection, resuming after the last event id it saw.
function startTail(from) {
  stopTail();
  page.paused = false;
  const source = new EventSource(`api/tail?from=${from}`);
  page.tail = source;
  tailStatus('connecting', 'connecting');
  source.onopen = () => tailStatus('live', 'live');
  source.onerror = () => {
    if (page.tail === source) tailStatus('connecting', 'reconnecting');
  };
  source.addEventListener('failed', (message) => {
    stopTail();
    showError(new Error(`the live tail stopped: ${message.data}`));
  });
  source.addEventListener('event', (message) => {
    const event = JSON.parse(message.data);
    if (event.position <= page.newest) return;
    page.newest = event.position;
    page.head = Math.max(page.head, event.position);
    $('head').textContent = String(page.head);
    page.events.unshift(event);
    if (page.events.length > EVENTS_KEPT_MAX) {
      page.events.length = EVENTS_KEPT_MAX;
      page.oldest = page.events[page.events.length - 1].position;
    }
    if (!page.oldest) page.oldest = event.position;
    scheduleRender(event.position);
  });
}

function stopTail() {
  if (page.tail) page.tail.close();
  page.tail = null;
  tailStatus('off', 'paused');
}

function toggleTail() {
  if (page.tail) {
    stopTail();
    page.paused = true;
  } else {
    startTail(page.newest + 1);
  }
}

// ---- one event and its causal graph ---------------------------------------------------------

function eventHash(id) {
  return `#event/${encodeURIComponent(id)}`;
}

function entityHash(scope, entity) {
  return `#entity/${encodeURIComponent(scope)}/${encodeURIComponent(entity)}`;
}

function idLink(id) {
  return el('a', { href: eventHash(id), class: 'mono', title: id }, id);
}

async function showEvent(id) {
  page.eventId = id;
  for (const row of $('events').tBodies[0].rows) row.classList.toggle('selected', row.dataset.id === id);
  const panel = $('event-panel');
  panel.hidden = false;
  try {
    const event = await api(`api/events/${encodeURIComponent(id)}`);
    $('event-title').textContent = `#${event.position}`;
    const metadata = Object.entries(event.metadata || {});
    facts($('event-facts'), [
      ['id', event.id, 'mono wrap'],
      ['type', event.type, 'strong'],
      ['scope / entity', el('span', {}, `${event.scope} / `,
        el('a', { href: entityHash(event.scope, event.entity) }, event.entity)), ''],
      ['position · version', `${event.position} · ${event.version}`, 'mono'],
      ['time (UTC)', time(event.timestamp), 'mono'],
      ['tags', event.tags.length ? event.tags.join(', ') : '–'],
      ['causation', event.causation.length
        ? el('span', { class: 'id-list' }, ...event.causation.map(idLink))
        : 'none (a root)'],
      ['correlation', event.correlation_id, 'mono wrap'],
      ['content type', event.content_type || '–'],
      ['metadata', metadata.length ? metadata.map(([k, v]) => `${k}=${v}`).join(', ') : '–'],
      ['hash', event.hash, 'mono wrap dim'],
    ]);
    $('payload-title').textContent = `Payload (${bytes(event.payload_bytes)})`;
    $('event-payload').textContent = payloadText(event);
    await drawGraph(event);
    panel.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  } catch (err) {
    $('event-title').textContent = '';
    facts($('event-facts'), [['error', err.message]]);
    $('event-payload').textContent = '';
    clear($('graph'));
  }
}

// Layers: the event at 0, each ancestor above every effect of it that is shown (-1, -2, ...),
// each descendant below every cause of it that is shown (1, 2, ...). Positions are a causal
// order (a parent's is lower), so one pass in position order places every node.
function layered(focus, up, down) {
  const nodes = new Map();
  for (const node of up.nodes.concat(down.nodes)) nodes.set(node.id, node);
  const edges = new Map();
  for (const edge of up.edges.concat(down.edges)) edges.set(`${edge.parent} ${edge.child}`, edge);
  const layer = new Map([[focus.id, 0]]);
  const upIds = new Set(up.nodes.map((node) => node.id));
  const downIds = new Set(down.nodes.map((node) => node.id));
  const byPosition = (a, b) => a.position - b.position;
  for (const node of up.nodes.slice().sort(byPosition).reverse()) {
    if (node.id === focus.id) continue;
    let at = 0;
    for (const edge of edges.values()) {
      if (edge.parent === node.id && upIds.has(edge.child) && layer.has(edge.child)) {
        at = Math.min(at, layer.get(edge.child) - 1);
      }
    }
    layer.set(node.id, at === 0 ? -1 : at);
  }
  for (const node of down.nodes.slice().sort(byPosition)) {
    if (node.id === focus.id) continue;
    let at = 0;
    for (const edge of edges.values()) {
      if (edge.child === node.id && downIds.has(edge.parent) && layer.has(edge.parent)) {
        at = Math.max(at, layer.get(edge.parent) + 1);
      }
    }
    layer.set(node.id, at === 0 ? 1 : at);
  }
  const rows = new Map();
  for (const [id, at] of layer) {
    if (!rows.has(at)) rows.set(at, []);
    rows.get(at).push(nodes.get(id) || focus);
  }
  for (const row of rows.values()) row.sort(byPosition);
  return { rows, edges: [...edges.values()].filter((e) => layer.has(e.parent) && layer.has(e.child)), layer };
}

async function drawGraph(focus) {
  const box = clear($('graph'));
  const depth = $('graph-depth').value;
  const id = encodeURIComponent(focus.id);
  const [up, down] = await Promise.all([
    api(`api/events/${id}/ancestors?depth=${depth}`),
    api(`api/events/${id}/descendants?depth=${depth}`),
  ]);
  const { rows, edges, layer } = layered(focus, up, down);
  const nodeW = 196;
  const nodeH = 50;
  const gapX = 24;
  const gapY = 54;
  const pad = 16;
  const levels = [...rows.keys()].sort((a, b) => a - b);
  const widest = Math.max(...[...rows.values()].map((row) => row.length));
  const width = Math.max(widest * (nodeW + gapX) - gapX + 2 * pad, nodeW + 2 * pad);
  const height = levels.length * (nodeH + gapY) - gapY + 2 * pad;
  const where = new Map();
  levels.forEach((at, levelIdx) => {
    const row = rows.get(at);
    const rowWidth = row.length * (nodeW + gapX) - gapX;
    row.forEach((node, nodeIdx) => {
      where.set(node.id, {
        x: (width - rowWidth) / 2 + nodeIdx * (nodeW + gapX),
        y: pad + levelIdx * (nodeH + gapY),
      });
    });
  });
  const picture = svg('svg', {
    width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `causal graph of event ${focus.position}`,
  });
  picture.append(svg('defs', {},
    svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))));
  const edgeLayer = svg('g', { class: 'edges' });
  for (const edge of edges) {
    const from = where.get(edge.parent);
    const to = where.get(edge.child);
    const x1 = from.x + nodeW / 2;
    const y1 = from.y + nodeH;
    const x2 = to.x + nodeW / 2;
    const y2 = to.y - 2;
    const bend = Math.max(24, (y2 - y1) / 2);
    edgeLayer.append(svg('path', {
      class: 'edge', 'data-parent': edge.parent, 'data-child': edge.child,
      d: `M ${x1} ${y1} C ${x1} ${y1 + bend}, ${x2} ${y2 - bend}, ${x2} ${y2}`,
      'marker-end': 'url(#arrow)',
    }));
  }
  picture.append(edgeLayer);
  const nodeLayer = svg('g', { class: 'nodes' });
  for (const [nodeId, at] of layer) {
    const node = nodeId === focus.id ? focus : (up.nodes.concat(down.nodes)).find((n) => n.id === nodeId);
    const { x, y } = where.get(nodeId);
    const kind = at === 0 ? 'focus' : at < 0 ? 'ancestor' : 'descendant';
    const group = svg('g', {
      class: `node ${kind}`, 'data-id': nodeId, 'data-position': node.position,
      transform: `translate(${x} ${y})`, tabindex: 0,
      onclick: () => { location.hash = eventHash(nodeId); },
    },
    svg('title', {}, `${node.type}\n${node.scope} / ${node.entity} v${node.version}\nposition ${node.position}\n${node.id}`),
    svg('rect', { width: nodeW, height: nodeH, rx: 7, ry: 7 }),
    svg('text', { x: 12, y: 21, class: 'node-type' }, short(node.type, 24)),
    svg('text', { x: 12, y: 38, class: 'node-sub' }, short(`${node.scope}/${node.entity} · #${node.position}`, 30)));
    nodeLayer.append(group);
  }
  picture.append(nodeLayer);
  box.append(picture);
  const n = layer.size;
  const notes = [`${n} event${n === 1 ? '' : 's'}, ${edges.length} link${edges.length === 1 ? '' : 's'}`];
  if (up.truncated || down.truncated) notes.push('cut at the depth or size limit: raise the depth or follow a node');
  $('graph-note').textContent = notes.join('; ');
}

// ---- an entity's history --------------------------------------------------------------------

async function showEntity(scope, entity) {
  const panel = $('entity-panel');
  panel.hidden = false;
  $('entity-title').textContent = `${scope} / ${entity}`;
  const body = clear($('entity-events').tBodies[0]);
  try {
    const query = `scope=${encodeURIComponent(scope)}&entity=${encodeURIComponent(entity)}&limit=500`;
    const history = await api(`api/entity?${query}`);
    for (const event of history.events) {
      const row = el('tr', { 'data-position': event.position, 'data-id': event.id, tabindex: 0 },
        el('td', { class: 'num mono' }, event.version),
        el('td', { class: 'num mono' }, event.position),
        el('td', { class: 'mono dim' }, time(event.timestamp)),
        el('td', { class: 'type' }, event.type),
        el('td', { class: 'mono payload-preview' }, preview(event)));
      row.addEventListener('click', () => { location.hash = eventHash(event.id); });
      body.append(row);
    }
    const shown = history.events.length;
    $('entity-note').textContent = shown < history.version
      ? `versions 1 to ${shown} of ${history.version}`
      : `${history.version} version${history.version === 1 ? '' : 's'}`;
    panel.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  } catch (err) {
    $('entity-note').textContent = err.message;
  }
}

// ---- receipt verification -------------------------------------------------------------------

async function verifyReceipt() {
  const result = $('verify-result');
  result.hidden = false;
  result.dataset.valid = '';
  result.textContent = 'checking…';
  try {
    const verdict = await api('api/verify', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: $('verify-input').value,
    });
    result.dataset.valid = verdict.valid ? 'yes' : 'no';
    const what = `${verdict.events} event${verdict.events === 1 ? '' : 's'}${
      verdict.signature_checked ? ', signature and digest checked' : '; unsigned: the digest is not checked'}`;
    result.textContent = verdict.valid ? `✓ valid (${what})` : `✗ does not verify: ${verdict.reason}`;
  } catch (err) {
    result.dataset.valid = 'error';
    result.textContent = `✗ ${err.message}`;
  }
}

// ---- navigation -----------------------------------------------------------------------------

function route() {
  let parts;
  try {
    parts = location.hash.replace(/^#/, '').split('/').map(decodeURIComponent);
  } catch {
    return; // a malformed address: stay where we are
  }
  if (parts[0] === 'event' && parts[1]) showEvent(parts[1]);
  else if (parts[0] === 'entity' && parts.length >= 3) showEntity(parts[1], parts.slice(2).join('/'));
}

// The lookup box: an event id shows that event, SCOPE/ENTITY that entity's history.
function lookup(text) {
  const wanted = text.trim();
  if (!wanted) return false;
  if (/^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$/.test(wanted)) {
    location.hash = eventHash(wanted.toLowerCase());
    return true;
  }
  const slash = wanted.indexOf('/');
  if (slash > 0 && slash < wanted.length - 1) {
    location.hash = entityHash(wanted.slice(0, slash).trim(), wanted.slice(slash + 1).trim());
    return true;
  }
  showError(new Error('look up an event id, or SCOPE/ENTITY for an entity\'s history'));
  return false;
}

function start() {
  $('lookup').addEventListener('keydown', (key) => {
    if (key.key !== 'Enter') return;
    if (lookup($('lookup').value)) $('lookup').value = '';
  });
  $('tail-toggle').addEventListener('click', toggleTail);
  $('events-older').addEventListener('click', loadOlder);
  $('verify-button').addEventListener('click', verifyReceipt);
  $('event-close').addEventListener('click', () => {
    $('event-panel').hidden = true;
    page.eventId = null;
    history.replaceState(null, '', location.pathname);
  });
  $('entity-close').addEventListener('click', () => {
    $('entity-panel').hidden = true;
    history.replaceState(null, '', location.pathname);
  });
  $('graph-depth').addEventListener('change', () => {
    if (page.eventId) showEvent(page.eventId);
  });
  window.addEventListener('hashchange', route);
  loadState();
  loadGates();
  loadEvents();
  route();
  setInterval(loadState, STATE_REFRESH_MS);
  setInterval(loadGates, GATES_REFRESH_MS);
}

document.addEventListener('DOMContentLoaded', start);
