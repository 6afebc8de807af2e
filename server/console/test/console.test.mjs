// The web console in a real browser: starts target/debug/causewayd on a scratch directory,
// writes a gate and a small causal chain with target/debug/causeway, loads the console in
// headless Chromium and checks what an operator sees: the head, the gate, the events, the live
// tail, an event's causal graph (nodes, edges, layers), an entity's history, receipt
// verification (a pasted receipt verifies, a tampered one does not), that the page asked for
// nothing outside the admin port and threw nothing, and that a screenshot was written.
//
// Run by ./run (which installs what is missing); not part of `cargo test`.
// Environment: CHROMIUM (default /usr/bin/chromium), CONSOLE_SCREENSHOT (where the screenshot
// goes; default a scratch file), CARGO_TARGET_DIR (default ../../../target).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../../..');
const target = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(root, 'target');
const causewayd = join(target, 'debug', 'causewayd');
const causeway = join(target, 'debug', 'causeway');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const scratch = mkdtempSync(join(tmpdir(), 'causeway-console-'));
const screenshot = resolve(process.env.CONSOLE_SCREENSHOT || join(scratch, 'console.png'));
const SCREENSHOT_BYTES_MIN = 20_000; // a blank or broken page compresses far below this
const STEP_MS = 15_000;

for (const [what, path] of [['causewayd', causewayd], ['causeway', causeway], ['chromium', chromiumPath]]) {
  assert.ok(existsSync(path), `${what} is missing at ${path}`);
}

let server = null;
let context = null;

function step(name) {
  console.log(`--- ${name}`);
}

// Starts causewayd and resolves with its gRPC and admin addresses from its first two lines.
function startServer() {
  return new Promise((resolvePromise, reject) => {
    server = spawn(causewayd, [
      '--data-dir', join(scratch, 'data'),
      '--listen', '127.0.0.1:0',
      '--admin-listen', '127.0.0.1:0',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`causewayd did not start: ${err}`)), STEP_MS);
    server.stderr.on('data', (chunk) => { err += chunk; });
    server.stdout.on('data', (chunk) => {
      out += chunk;
      const grpc = /^listening on (\S+)$/m.exec(out);
      const admin = /^admin on (\S+)$/m.exec(out);
      if (grpc && admin) {
        clearTimeout(timer);
        resolvePromise({ grpc: grpc[1], admin: admin[1] });
      }
    });
    server.on('exit', (code) => reject(new Error(`causewayd exited with ${code}: ${err}`)));
  });
}

function cli(grpc, ...args) {
  return execFileSync(causeway, ['--server', grpc, ...args], { encoding: 'utf8' });
}

// Appends one event and returns its receipt (as `--output json` prints it) and its id.
function append(grpc, scope, entity, type, data, parents = [], tags = []) {
  const args = ['--output', 'json', 'append', scope, entity, type, '--data', JSON.stringify(data)];
  for (const parent of parents) args.push('--causation', parent);
  for (const tag of tags) args.push('--tag', tag);
  const text = cli(grpc, ...args);
  return { text, id: JSON.parse(text).events[0].id };
}

async function main() {
  step('causewayd, a gate and a causal chain');
  const { grpc, admin } = await startServer();
  const base = `http://${admin}/`;
  cli(grpc, 'gates', 'register', '--name', 'small-orders', '--scope', 'acme', '--type', 'OrderPlaced',
    '--cel', 'event.payload.total < 1000');
  append(grpc, 'acme', 'customer-42', 'CustomerRegistered', { name: 'Ada', tier: 'gold' }, [], ['customer:42']);
  const placed = append(grpc, 'acme', 'order-7', 'OrderPlaced', { total: 12, items: [{ sku: 'tea', qty: 3 }] }, [], ['customer:42']);
  const authorized = append(grpc, 'acme', 'payment-7', 'PaymentAuthorized', { method: 'card', amount: 12 });
  const paid = append(grpc, 'acme', 'order-7', 'OrderPaid', { amount: 12 }, [placed.id, authorized.id]);
  const shipped = append(grpc, 'acme', 'shipment-7', 'ShipmentRequested', { carrier: 'dhl' }, [paid.id]);
  const invoiced = append(grpc, 'acme', 'invoice-7', 'InvoiceIssued', { number: 'INV-0007' }, [placed.id]);
  const closed = append(grpc, 'acme', 'order-7', 'OrderClosed', {}, [shipped.id, invoiced.id]);
  const headBefore = 8; // the gate's registration and seven events
  const ids = { placed: placed.id, authorized: authorized.id, paid: paid.id, shipped: shipped.id, invoiced: invoiced.id, closed: closed.id };

  step('headless chromium');
  const profile = mkdtempSync(join(scratch, 'profile-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1440, height: 1000 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  context.setDefaultTimeout(STEP_MS);
  const page = context.pages()[0] || await context.newPage();
  const foreign = [];
  const thrown = [];
  page.on('request', (request) => {
    if (!request.url().startsWith(base) && !request.url().startsWith('data:')) foreign.push(request.url());
  });
  page.on('pageerror', (err) => thrown.push(String(err)));
  page.on('console', (message) => {
    // A refused request is logged by the browser too; those are checked below, by URL.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      thrown.push(message.text());
    }
  });
  const refused = [];
  page.on('response', (response) => {
    if (response.status() >= 400) refused.push(`${response.status()} ${response.url()}`);
  });

  step('the page: head, digest, readiness, gates, events');
  await page.goto(base);
  await page.waitForFunction((head) => document.getElementById('head').textContent === String(head), headBefore);
  assert.equal(await page.textContent('#ready'), 'ready');
  const digest = JSON.parse(cli(grpc, '--output', 'json', 'head')).digest;
  assert.equal(await page.getAttribute('#digest', 'title'), digest, 'the page shows the log digest');
  await page.waitForSelector('#gates li[data-name="small-orders"]');
  assert.match(await page.textContent('#gates li[data-name="small-orders"]'), /event\.payload\.total < 1000/);
  const positions = await page.$$eval('#events tbody tr', (rows) => rows.map((row) => Number(row.dataset.position)));
  assert.deepEqual(positions, [8, 7, 6, 5, 4, 3, 2, 1], 'every event, newest first');
  assert.equal(await page.textContent('#events tbody tr[data-position="3"] td.type'), 'OrderPlaced');
  assert.match(await page.textContent('#events tbody tr[data-position="3"]'), /"total":12/);
  // The wall time, RFC 3339 in the CLI's receipt, is the one the row shows (UTC, milliseconds).
  const wall = JSON.parse(placed.text).events[0].timestamp.wall;
  assert.match(wall, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  assert.ok((await page.textContent('#events tbody tr[data-position="3"]')).includes(wall.replace('T', ' ').replace('Z', '')),
    'the row shows the wall time');

  step('the live tail shows an event appended after the page loaded');
  await page.waitForSelector('#tail-status[data-state="live"]');
  const late = append(grpc, 'acme', 'order-8', 'OrderPlaced', { total: 99 }, [], ['customer:42']);
  await page.waitForSelector('#events tbody tr[data-position="9"]');
  assert.equal(await page.getAttribute('#events tbody tr:first-child', 'data-id'), late.id);
  await page.waitForFunction(() => document.getElementById('head').textContent === '9');

  step('an event and its causal graph');
  await page.evaluate((id) => { location.hash = `#event/${id}`; }, ids.shipped);
  await page.waitForFunction(() => document.querySelectorAll('#graph svg g.node').length === 5);
  assert.equal(await page.textContent('#event-title'), '#6');
  assert.match(await page.textContent('#event-payload'), /"carrier": "dhl"/, 'JSON payloads are pretty-printed');
  const nodes = await page.$$eval('#graph svg g.node', (groups) => groups.map((group) => ({
    id: group.dataset.id,
    kind: group.getAttribute('class').replace('node ', ''),
    y: group.transform.baseVal.consolidate().matrix.f,
  })));
  const kindOf = Object.fromEntries(nodes.map((node) => [node.id, node.kind]));
  assert.deepEqual(kindOf, {
    [ids.placed]: 'ancestor',
    [ids.authorized]: 'ancestor',
    [ids.paid]: 'ancestor',
    [ids.shipped]: 'focus',
    [ids.closed]: 'descendant',
  });
  const y = Object.fromEntries(nodes.map((node) => [node.id, node.y]));
  assert.equal(y[ids.placed], y[ids.authorized], 'both causes of OrderPaid share a layer');
  assert.ok(y[ids.placed] < y[ids.paid] && y[ids.paid] < y[ids.shipped] && y[ids.shipped] < y[ids.closed],
    `ancestors above, descendants below: ${JSON.stringify(y)}`);
  const edges = await page.$$eval('#graph svg path.edge', (paths) => paths.map((path) => `${path.dataset.parent}>${path.dataset.child}`).sort());
  assert.deepEqual(edges, [
    `${ids.placed}>${ids.paid}`,
    `${ids.authorized}>${ids.paid}`,
    `${ids.paid}>${ids.shipped}`,
    `${ids.shipped}>${ids.closed}`,
  ].sort());

  step('following a graph node shows that event and its graph');
  await page.click(`#graph svg g.node[data-id="${ids.placed}"]`);
  await page.waitForFunction(() => document.getElementById('event-title').textContent === '#3');
  await page.waitForFunction(() => document.querySelectorAll('#graph svg g.node').length === 5);
  assert.equal(await page.$$eval('#graph svg path.edge', (paths) => paths.length), 5);

  step('an entity\'s history, found with the lookup box');
  await page.fill('#lookup', 'acme/order-7');
  await page.press('#lookup', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('#entity-events tbody tr').length === 3);
  const history = await page.$$eval('#entity-events tbody tr td.type', (cells) => cells.map((cell) => cell.textContent));
  assert.deepEqual(history, ['OrderPlaced', 'OrderPaid', 'OrderClosed']);

  step('a pasted receipt verifies; a tampered one does not');
  await page.fill('#verify-input', paid.text);
  await page.click('#verify-button');
  await page.waitForSelector('#verify-result[data-valid="yes"]');
  const tampered = JSON.parse(paid.text);
  const hash = tampered.events[0].hash;
  tampered.events[0].hash = (hash[0] === '0' ? '1' : '0') + hash.slice(1);
  await page.fill('#verify-input', JSON.stringify(tampered, null, 2));
  await page.click('#verify-button');
  await page.waitForSelector('#verify-result[data-valid="no"]');
  assert.match(await page.textContent('#verify-result'), /hash differs/);
  await page.fill('#verify-input', '{"events": [');
  await page.click('#verify-button');
  await page.waitForSelector('#verify-result[data-valid="error"]');
  assert.match(await page.textContent('#verify-result'), /not JSON/);
  assert.deepEqual(refused, [`400 ${base}api/verify`], 'only the malformed receipt was refused');

  step('the screenshot');
  await page.fill('#verify-input', paid.text);
  await page.click('#verify-button');
  await page.waitForSelector('#verify-result[data-valid="yes"]');
  await page.evaluate((id) => { location.hash = `#event/${id}`; }, ids.paid);
  await page.waitForFunction(() => document.getElementById('event-title').textContent === '#5');
  await page.waitForFunction(() => document.querySelectorAll('#graph svg g.node').length === 5);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(3000); // the live tail's highlight fades
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  const size = statSync(screenshot).size;
  assert.ok(size >= SCREENSHOT_BYTES_MIN, `the screenshot is ${size} bytes`);
  const png = readFileSync(screenshot);
  assert.equal(png.subarray(1, 4).toString(), 'PNG', 'the screenshot is a PNG');
  console.log(`screenshot: ${screenshot} (${size} bytes)`);

  step('names and payloads are the writers\' data: markup in them shows as text');
  const marked = append(grpc, 'acme', 'order-<b>9</b>', 'OrderPlaced',
    { total: 5, note: '<img src=x onerror="document.title=1">' });
  await page.waitForSelector('#events tbody tr[data-position="10"]');
  assert.match(await page.textContent('#events tbody tr[data-position="10"]'), /order-<b>9<\/b>.*<img src=x/);
  await page.fill('#lookup', marked.id);
  await page.press('#lookup', 'Enter');
  await page.waitForFunction(() => document.getElementById('event-title').textContent === '#10');
  assert.match(await page.textContent('#event-payload'), /"note": "<img src=x/);
  assert.equal(await page.$$eval('main b, main img', (found) => found.length), 0, 'event data is never markup');
  assert.notEqual(await page.title(), '1');

  assert.deepEqual(foreign, [], 'the page requests nothing outside the admin port');
  assert.deepEqual(thrown, [], 'the page threw nothing and logged no errors');
}

async function cleanup() {
  if (context) await context.close().catch(() => {});
  if (server && server.exitCode === null) server.kill('SIGTERM');
  if (!process.env.CONSOLE_KEEP_SCRATCH) rmSync(scratch, { recursive: true, force: true });
}

try {
  await main();
  await cleanup();
  console.log('console test: ok');
} catch (err) {
  console.error('console test FAILED:', err);
  await cleanup();
  process.exit(1);
}
