// peerchat's page: a front end of the client core. Plain JavaScript, no libraries.
// Every text from others is inserted with textContent, never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
let token = '';
let state = null;
let lastId = 0;
let selected = null; // the key (lower-case name) of the chat tab shown
const unread = {};
const addrs = {};
let stopped = false;
let leaving = false; // Log out was pressed: an unreachable client then means it stopped
// Conversations opened in the page with nobody's session yet (key → name): messages and
// files to them go through the server, which keeps them while they are offline.
const local = new Map();
let usersKey = ''; // what the users list was last drawn from: 1000 rows are not redrawn per event
// Tabs put away with "Put away" (key → what they showed then): one comes back when
// something new happens in it.
const dismissed = new Map();
let keysFor = null; // whose identity key the key box is about
let verifying = null; // the user the last "Verify key" asked about

function takeToken() {
  const m = /(?:^#|&)token=([0-9a-f]+)/.exec(location.hash);
  if (m) {
    token = m[1];
    sessionStorage.setItem('peerchat-token', token);
    // The token leaves the address bar so it is not bookmarked or shared by accident.
    history.replaceState(null, '', location.pathname);
  } else {
    token = sessionStorage.getItem('peerchat-token') || '';
  }
}

async function api(path, options) {
  const opts = options || {};
  opts.headers = Object.assign({ 'X-Peerchat-Token': token }, opts.headers || {});
  const response = await fetch(path, opts);
  if (!response.ok) {
    const text = await response.text();
    throw new Error(text || response.statusText);
  }
  return response;
}

function post(path, body) {
  return api(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  }).catch((e) => notice(e.message, true));
}

function command(body) {
  return post('/api/command', body);
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function button(text, label, onClick, cls) {
  const b = el('button', text, cls);
  b.type = 'button';
  b.setAttribute('aria-label', label);
  b.addEventListener('click', onClick);
  return b;
}

function notice(text, error) {
  const box = $('notices');
  const item = el('div', text, error ? 'notice error' : 'notice');
  box.appendChild(item);
  while (box.children.length > 4) box.removeChild(box.firstChild);
  setTimeout(() => item.remove(), error ? 9000 : 6000);
}

function size(bytes) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u + 1 < units.length) { v /= 1024; u += 1; }
  return u === 0 ? bytes + ' B' : v.toFixed(1) + ' ' + units[u];
}

function clock(ms) {
  const d = new Date(ms);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  // A line from another day (history) says which day, as in the terminal.
  if (d.toDateString() === new Date().toDateString()) return time;
  const pad = (n) => String(n).padStart(2, '0');
  return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + time;
}

const same = (a, b) => (a || '').toLowerCase() === (b || '').toLowerCase();

// ---- login ----

function renderLogin() {
  const q = state.question;
  const list = $('login-messages');
  list.replaceChildren(...state.login_messages.map((m) => el('li', m.replace(/^error: /, ''),
    /^error/.test(m) ? 'error' : '')));
  $('yes-no').hidden = !(q && (q.kind === 'new' || q.kind === 'trust'));
  $('answer-box').hidden = !(q && ['username', 'password', 'port', 'share'].includes(q.kind));
  $('retry-box').hidden = !(q && q.kind === 'retry');
  $('waiting').hidden = !!q;
  $('question').textContent = q ? q.prompt : '';
  // Registration: the page asks for the new password twice and compares.
  $('confirm-box').hidden = !(q && q.kind === 'password' && /^choose/i.test(q.prompt));
  if (q && !$('answer-box').hidden) {
    const input = $('answer');
    const labels = {
      username: 'Username', password: q.prompt || 'Password',
      port: 'Listening port (0 = any free port)', share: 'Folder to share (empty for none)',
    };
    if (input.dataset.kind !== q.kind + q.prompt) {
      input.dataset.kind = q.kind + q.prompt;
      input.value = q.kind === 'port' ? '0' : '';
      input.type = q.kind === 'password' ? 'password' : (q.kind === 'port' ? 'number' : 'text');
      $('answer-label').textContent = labels[q.kind];
      input.setAttribute('aria-label', labels[q.kind]);
      input.focus();
      $('confirm').value = '';
    }
  }
}

function answer(value) {
  $('answer').dataset.kind = '';
  post('/api/login', { answer: value });
}

// ---- the main screen ----

function render() {
  if (!state) return;
  const ready = state.phase === 'ready';
  $('login').hidden = state.phase !== 'login';
  $('app').hidden = !ready;
  $('ended').hidden = state.phase !== 'ended';
  $('logout').hidden = !ready;
  if (state.phase === 'login') renderLogin();
  $('whoami').textContent = state.me ? state.me + ' · peers reach you at ' + state.addr : '';
  const link = $('link-state');
  const words = { login: 'logging in', ended: 'stopped' };
  link.textContent = words[state.phase] || (state.connected ? 'online' : 'offline');
  link.className = 'pill ' + (state.phase === 'login' ? '' : (state.connected ? 'on' : 'off'));
  $('banner').hidden = !(ready && !state.connected);
  if (!ready) return;
  renderUsers();
  renderRequests();
  renderChat();
  renderTransfers();
  renderFiles();
}

function renderUsers() {
  const filter = $('user-filter').value.trim().toLowerCase();
  const offset = state.users_offset || 0;
  const key = JSON.stringify([state.users, state.users_total, offset, state.me, filter, addrs]);
  if (key === usersKey) return;
  usersKey = key;
  const items = [];
  for (const user of state.users) {
    if (filter && !user.toLowerCase().includes(filter)) continue;
    const me = same(user, state.me);
    const li = el('li', null, 'user');
    const name = el('span', user + (me ? ' (you)' : ''), 'name');
    const dot = el('span', '', 'dot');
    dot.setAttribute('aria-hidden', 'true');
    li.append(dot, name);
    if (!me) {
      const actions = el('span', null, 'actions');
      actions.append(
        button('Chat', 'Chat with ' + user, () => { command({ type: 'connect', user: user }); selected = user.toLowerCase(); }),
        button('Address', 'View IP and port of ' + user, () => command({ type: 'info', user: user })),
        button('Files', 'View files shared by ' + user, () => command({ type: 'files', user: user })),
        button('Message', 'Send ' + user + ' a message through the server', () => openConversation(user)),
      );
      li.append(actions);
    }
    if (addrs[user.toLowerCase()]) li.append(el('span', addrs[user.toLowerCase()], 'addr'));
    items.push(li);
  }
  if (!items.length) items.push(el('li', filter && state.users.length ? 'Nobody on this page matches.' : 'Nobody is online.', 'muted'));
  $('users').replaceChildren(...items);
  // Past 1000 online the server sends a page at a time (LIST offset), as \list 1000 does.
  const shown = state.users.length;
  $('user-pages').hidden = !(state.users_total > shown || offset > 0);
  $('users-range').textContent = (shown ? (offset + 1) + '–' + (offset + shown) : 'none') + ' of ' + state.users_total + ' online';
  $('users-prev').disabled = offset === 0;
  $('users-next').disabled = offset + shown >= state.users_total;
}

// Opens (or shows) the conversation with `user`: a session's tab, or a page-only one
// whose messages and files go through the server.
function openConversation(user) {
  const key = user.toLowerCase();
  dismissed.delete(key);
  if (!state.sessions[key]) local.set(key, user);
  selected = key;
  unread[key] = 0;
  render();
  $('say').focus();
}

// The sessions of the snapshot, and the page's own conversations with nobody's session.
function conversations() {
  const all = Object.assign({}, state.sessions);
  for (const [key, peer] of local) {
    if (!all[key]) all[key] = { peer: peer, state: 'messages', ended: null, path: '', lines: [] };
  }
  for (const [key, was] of dismissed) {
    const s = all[key];
    if (s && s.state === was.state && s.lines.length === was.lines) delete all[key];
    else dismissed.delete(key);
  }
  return all;
}

function showKeys(text, user, changed) {
  keysFor = user;
  $('keys-text').textContent = text.replace(/^\* /gm, '');
  $('trust-key').hidden = !changed || !user;
  if (user) $('trust-key').setAttribute('aria-label', 'Trust the new key of ' + user);
  $('keys').hidden = false;
}

// Replaces a list's children only when the nodes themselves changed, so a button being
// pressed is never swapped out from under the pointer by a timer's redraw.
function setChildren(parent, nodes) {
  const same = parent.children.length === nodes.length &&
    nodes.every((n, i) => parent.children[i] === n);
  if (!same) parent.replaceChildren(...nodes);
}

const requestNodes = new Map(); // who → { box, countdown }

function renderRequests() {
  const now = Date.now();
  const boxes = [];
  for (const [from, until] of Object.entries(state.requests)) {
    let n = requestNodes.get(from);
    if (!n) {
      const box = el('div', null, 'request');
      box.setAttribute('role', 'alertdialog');
      box.setAttribute('aria-label', 'Chat request from ' + from);
      const countdown = el('span', '', 'countdown');
      box.append(
        el('span', from + ' wants to chat', 'who'),
        countdown,
        button('Accept', 'Accept chat from ' + from, () => { selected = from.toLowerCase(); command({ type: 'accept', user: from }); }),
        button('Decline', 'Decline chat from ' + from, () => command({ type: 'decline', user: from }), 'secondary'),
      );
      n = { box: box, countdown: countdown };
      requestNodes.set(from, n);
    }
    n.countdown.textContent = Math.max(0, Math.round((until - now) / 1000)) + ' s left';
    boxes.push(n.box);
  }
  for (const from of Array.from(requestNodes.keys())) {
    if (!(from in state.requests)) requestNodes.delete(from);
  }
  setChildren($('requests'), boxes);
}

function renderChat() {
  const all = conversations();
  const keys = Object.keys(all);
  if (selected && !all[selected]) {
    if (!keys.length) selected = null;
  }
  if (!selected && keys.length) selected = keys[0];
  const tabs = keys.map((key) => {
    const s = all[key];
    const tab = el('button', null, 'tab' + (key === selected ? ' selected' : '') + ' ' + s.state);
    tab.type = 'button';
    tab.setAttribute('role', 'tab');
    tab.setAttribute('aria-selected', key === selected ? 'true' : 'false');
    const count = unread[key] || 0;
    // How an open session reaches the peer: direct, reverse (it dialled us) or relay.
    const path = s.state === 'open' && s.path ? s.path : '';
    const words = { closed: ', ended', asking: ', waiting', messages: ', through the server' };
    tab.setAttribute('aria-label', s.peer + (count ? ', ' + count + ' unread' : '') +
      (words[s.state] || '') + (path ? ', ' + path : ''));
    tab.append(el('span', s.peer));
    if (path) tab.append(el('span', path, 'path muted'));
    if (count) tab.append(el('span', String(count), 'badge'));
    tab.addEventListener('click', () => { selected = key; unread[key] = 0; render(); });
    return tab;
  });
  $('tabs').replaceChildren(...tabs);
  const session = selected ? all[selected] : null;
  if (session) unread[selected] = 0;
  $('chat-empty').hidden = !!session;
  const ready = state.phase === 'ready';
  const open = !!session && session.state === 'open' && ready;
  // Without a session (never asked, or ended) lines and files go through the server,
  // as \msg and \offer do in the terminal.
  const writable = !!session && ready && session.state !== 'asking';
  for (const id of ['say', 'say-send', 'pick']) $(id).disabled = !writable;
  $('close-session').disabled = !open;
  $('pick-label').classList.toggle('disabled', !writable);
  $('say').placeholder = open ? 'Write a message' : 'Message through the server (end-to-end encrypted)';
  $('say-send').textContent = open || !session ? 'Send' : 'Send via server';
  $('chat-title').textContent = session ? 'Chat with ' + session.peer : 'Chats';
  $('chat-tools').hidden = !session;
  if (session) {
    const modes = {
      // The ladder's rung: direct, reverse (the peer dialled us back) or the relay.
      open: 'Chat session' + ({ direct: ', direct', reverse: ', direct (dialled back)', relay: ", through the server's relay" }[session.path] || ''),
      asking: 'Waiting for ' + session.peer + ' to answer',
    };
    $('chat-mode').textContent = modes[session.state] ||
      'No session: messages and files go through the server and wait there while ' + session.peer + ' is offline.';
    $('open-session').hidden = session.state === 'open' || session.state === 'asking';
    $('open-session').setAttribute('aria-label', 'Start a chat session with ' + session.peer);
    $('earlier').setAttribute('aria-label', 'Earlier lines with ' + session.peer);
    $('verify-key').setAttribute('aria-label', 'Verify the key of ' + session.peer);
    $('put-away').hidden = session.state === 'open' || session.state === 'asking';
    $('put-away').setAttribute('aria-label', 'Put away the conversation with ' + session.peer);
  }
  const ended = $('chat-ended');
  ended.hidden = !(session && (session.state === 'closed' || session.state === 'asking'));
  if (session && session.state === 'closed') ended.textContent = 'This chat has ended' + (session.ended ? ': ' + session.ended : '.');
  if (session && session.state === 'asking') ended.textContent = 'Waiting for ' + session.peer + ' to answer…';
  const list = $('lines');
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 30;
  const lines = session ? session.lines.map((line) => {
    const own = same(line.sender, state.me);
    const note = line.sender === '*';
    // "/me waves" is an action, shown "* bob waves" as the terminal shows it.
    const action = !note && /^\/me /.test(line.text);
    const li = el('li', null, 'line' + (own ? ' own' : '') + (note ? ' note' : '') + (action ? ' action' : ''));
    const time = el('time', clock(line.at_ms));
    time.dateTime = new Date(line.at_ms).toISOString();
    const who = note ? '' : (action ? '*' : (own ? 'you' : line.sender));
    const text = action ? line.sender + ' ' + line.text.slice(4) : line.text;
    li.append(time, el('span', who, 'sender'), el('span', text, 'text'));
    return li;
  }) : [];
  list.replaceChildren(...lines);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function stageText(t) {
  const row = t.row;
  const st = row.stage;
  switch (st.kind) {
    // Through the server (no chat): it waits there while the peer is offline.
    case 'offered': return row.via_server ? 'queued at the server until ' + row.peer + ' answers' : 'offered, waiting for an answer';
    case 'asked': return row.via_server ? 'offered to you through the server' : 'offered to you';
    case 'connecting': return row.via_server ? 'accepted; starts when you are both online' : 'connecting';
    case 'active': {
      const total = row.size || 0;
      const left = row.rate > 0 && total > row.done ? Math.round((total - row.done) / row.rate) : null;
      const stalled = row.stalled || Date.now() - t.changed_ms > 5000;
      return size(row.done) + ' of ' + size(total) + ' · ' + size(Math.round(row.rate)) + '/s · ' +
        (stalled ? 'stalled' : (left === null ? '–' : Math.floor(left / 60) + ':' + String(left % 60).padStart(2, '0') + ' left'));
    }
    case 'finished':
      return st.data.result === 'ok' ? 'done, verified' : st.data.result + ': ' + st.data.detail;
    case 'dropped': return st.data;
    default: return st.kind;
  }
}

const transferNodes = new Map(); // id → { key, li, bar, status }

function buildTransfer(id, t) {
  const row = t.row;
  const li = el('li', null, 'transfer ' + row.stage.kind);
  li.dataset.id = String(id);
  const toward = (row.role === 'send' || row.role === 'serve') ? 'to ' : 'from ';
  // The path once the data connection is up: direct, reverse or relay.
  const via = ['active', 'finished'].includes(row.stage.kind) && row.route ? ' · ' + row.route : '';
  li.append(el('div', row.name, 'name'), el('div', row.role + ' ' + toward + row.peer + via, 'muted'));
  const bar = el('progress');
  bar.max = 100;
  bar.setAttribute('aria-label', 'Progress of ' + row.name);
  const status = el('div', '', 'status');
  status.setAttribute('aria-label', 'Status of ' + row.name);
  li.append(bar, status);
  const actions = el('div', null, 'actions');
  if (row.stage.kind === 'asked') {
    actions.append(
      button('Accept', 'Accept file ' + row.name, () => command({ type: 'accept_file', id: id })),
      button('Decline', 'Decline file ' + row.name, () => command({ type: 'decline_file', id: id }), 'secondary'),
    );
  }
  if (['offered', 'connecting', 'active'].includes(row.stage.kind)) {
    actions.append(button('Cancel', 'Cancel ' + row.name, () => command({ type: 'cancel', id: id }), 'secondary'));
  }
  if (t.saved) actions.append(button('Save', 'Save ' + row.name, () => save(id, row.name)));
  li.append(actions);
  return { li: li, bar: bar, status: status };
}

function renderTransfers() {
  const ids = Object.keys(state.transfers).map(Number).sort((a, b) => b - a);
  const items = ids.map((id) => {
    const t = state.transfers[id];
    const row = t.row;
    // Rebuilt only when its buttons change; bytes, rate and time left update in place.
    const key = row.stage.kind + '|' + t.saved + '|' + row.route;
    let n = transferNodes.get(id);
    if (!n || n.key !== key) {
      const before = n ? { pct: n.bar.value, arrived: n.arrived } : { pct: 0, arrived: 0 };
      n = buildTransfer(id, t);
      n.bar.value = before.pct;
      n.arrived = before.arrived;
      n.key = key;
      transferNodes.set(id, n);
    }
    const total = row.size || 0;
    const ok = row.stage.kind === 'finished' && row.stage.data.result === 'ok';
    const ended = row.stage.kind === 'dropped' || (row.stage.kind === 'finished' && !ok);
    const done = ok ? total : row.done;
    const pct = total ? Math.floor((done * 100) / total) : (ok ? 100 : 0);
    // A transfer that broke off keeps the bar where it stopped, and says what to do.
    if (!ended) { n.bar.value = pct; n.arrived = done; }
    const retry = ended && (row.role === 'fetch' || row.role === 'receive') && n.arrived > 0
      ? ' (' + size(n.arrived) + ' arrived and is kept: ' +
        (row.role === 'fetch' ? 'fetch it again to resume)' : 'it resumes if it is sent again)') : '';
    n.status.textContent = (ended ? '' : pct + '% · ') + stageText(t) + retry;
    return n.li;
  });
  if (!items.length) items.push(transferNodes.get('none') || el('li', 'No transfers yet.', 'muted'));
  if (!ids.length) transferNodes.set('none', items[0]);
  setChildren($('transfers'), items);
}

function renderFiles() {
  const items = state.files.map((f) => {
    const li = el('li', null, 'file');
    li.append(el('span', f.name, 'name'), el('span', size(f.size), 'size'), el('span', f.user, 'muted'));
    if (!same(f.user, state.me)) li.append(button('Fetch', 'Fetch ' + f.name + ' from ' + f.user, () => command({ type: 'fetch', user: f.user, name: f.name })));
    return li;
  });
  $('files').replaceChildren(...items);
  $('files-count').textContent = state.files_total > state.files.length
    ? 'Showing ' + state.files.length + ' of ' + state.files_total + ' files; search to narrow.'
    : (state.files.length ? '' : 'Press All or search to see shared files.');
}

async function save(id, name) {
  try {
    const response = await api('/api/file?id=' + id);
    const blob = await response.blob();
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  } catch (e) { notice(e.message, true); }
}

async function upload(files) {
  const session = selected ? conversations()[selected] : null;
  if (!session || session.state === 'asking') { notice('Open a chat or a conversation first, then send files into it.', true); return; }
  for (const file of files) {
    try {
      await api('/api/upload', {
        method: 'POST',
        headers: { 'X-File-Name': encodeURIComponent(file.name), 'X-To': encodeURIComponent(session.peer) },
        body: file,
      });
    } catch (e) { notice(file.name + ': ' + e.message, true); }
  }
}

// ---- events ----

function onEvent(event) {
  const d = event.data || {};
  switch (event.type) {
    case 'session':
      if (d.kind === 'chat' && d.data.peer.toLowerCase() !== selected) {
        const key = d.data.peer.toLowerCase();
        unread[key] = (unread[key] || 0) + 1;
      }
      if (d.kind === 'opened') selected = d.data.peer.toLowerCase();
      if (d.kind === 'error') notice(d.data, true);
      if (d.kind === 'not_opened') notice('No chat with ' + d.data.peer + ': ' + (d.data.detail || d.data.reason), true);
      if (d.kind === 'reversing') notice('Cannot reach ' + d.data.peer + ' directly; asking it to connect to us…');
      if (d.kind === 'relaying') notice('Cannot reach ' + d.data.peer + ' directly; meeting through the server\'s relay…');
      if (d.kind === 'refused') notice('Refused ' + d.data.count + ' connection(s) from ' + d.data.from + ' (' + d.data.why + ')', true);
      break;
    case 'transfer':
      if (d.kind === 'error') notice(d.data, true);
      if (d.kind === 'shared') notice('Sharing ' + d.data.count + ' file(s) from ' + d.data.dir);
      break;
    case 'mail':
      if (d.kind === 'received' && d.data.line.sender.toLowerCase() !== selected) {
        const key = d.data.line.sender.toLowerCase();
        unread[key] = (unread[key] || 0) + 1;
      }
      if (d.kind === 'away') notice(d.data.count + ' message(s) came through the server while you were away.');
      if (d.kind === 'sent') {
        notice(d.data.delivered ? 'Message to ' + d.data.to + ' delivered.'
          : 'Message to ' + d.data.to + ' queued: they are offline; the server keeps it (sealed) until they log in, at most ' +
            Math.round(d.data.expiry_secs / 86400) + ' days.');
      }
      if (d.kind === 'not_sent') notice('Message to ' + d.data.to + ' not sent: ' + d.data.why, true);
      if (d.kind === 'rejected') notice('A message said to be from ' + d.data.from + ' was refused: ' + d.data.why, true);
      break;
    case 'user_info':
      addrs[d.user.toLowerCase()] = d.addr;
      notice(d.user + ' is at ' + d.addr);
      break;
    case 'server_error': notice(d.message, true); break;
    case 'error': {
      // A peer's identity key changed: say it where it stays, with what to do.
      const m = /^WARNING: (.+?)'s identity key has CHANGED/.exec(d.text);
      if (m) showKeys(d.text, m[1], true); else notice(d.text, true);
      break;
    }
    case 'note':
      if (/safety number with /.test(d.text)) showKeys(d.text, verifying, /NEW key/.test(d.text));
      else if (/is trusted and pinned/.test(d.text)) showKeys(d.text, null, false);
      else notice(d.text.replace(/^\* /, ''));
      break;
    case 'not_connected': notice('Not connected to the server: press Reconnect first.', true); break;
    case 'server_notice': notice('Server: ' + d.message, true); break;
    case 'reconnected': notice('Reconnected to the server.'); command({ type: 'list' }); break;
    case 'welcome': command({ type: 'list' }); break;
    case 'files': case 'search':
      if (!d.files.length) notice('No shared files found.');
      break;
    default: break;
  }
}

// The snapshot; `resync` also moves the event cursor to it (first load, or after a gap),
// otherwise newer events are still read one by one so none is skipped.
async function loadState(resync) {
  const response = await api('/api/state');
  state = await response.json();
  if (resync) lastId = state.last_id;
  render();
}

async function poll() {
  while (!stopped) {
    try {
      const response = await api('/api/events?since=' + lastId);
      const events = await response.json();
      let gap = false;
      for (const event of events) {
        if (event.id !== lastId + 1) gap = true;
        onEvent(event);
        lastId = event.id;
        if (event.type === 'ended') stopped = true;
      }
      if (events.length) await loadState(gap);
    } catch (e) {
      if (leaving && state) {
        state.phase = 'ended';
        render();
        return;
      }
      $('link-state').textContent = 'client unreachable';
      $('link-state').className = 'pill off';
      await new Promise((r) => setTimeout(r, 2000));
      try { await loadState(true); } catch (_) { /* still away */ }
    }
  }
}

function wire() {
  $('answer-yes').addEventListener('click', () => answer('Y'));
  $('answer-no').addEventListener('click', () => answer('N'));
  $('retry').addEventListener('click', () => answer('Y'));
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (!$('confirm-box').hidden && $('confirm').value !== $('answer').value) {
      notice('The two passwords differ; type the same password twice.', true);
      return;
    }
    answer($('answer').value);
  });
  $('reconnect').addEventListener('click', () => command({ type: 'reconnect' }));
  $('logout').addEventListener('click', () => { leaving = true; command({ type: 'quit' }); });
  $('refresh-users').addEventListener('click', () => command({ type: 'list', offset: state ? state.users_offset || 0 : 0 }));
  $('user-filter').addEventListener('input', () => { if (state && state.phase === 'ready') renderUsers(); });
  $('users-prev').addEventListener('click', () => command({ type: 'list', offset: Math.max(0, (state.users_offset || 0) - 1000) }));
  $('users-next').addEventListener('click', () => command({ type: 'list', offset: (state.users_offset || 0) + 1000 }));
  $('write-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const user = $('write-to').value.trim();
    if (!user) return;
    $('write-to').value = '';
    openConversation(user);
  });
  const current = () => (selected ? conversations()[selected] : null);
  $('open-session').addEventListener('click', () => { const s = current(); if (s) command({ type: 'connect', user: s.peer }); });
  $('earlier').addEventListener('click', () => { const s = current(); if (s) command({ type: 'history', user: s.peer, n: 500 }); });
  $('verify-key').addEventListener('click', () => {
    const s = current();
    if (s) { verifying = s.peer; command({ type: 'verify', user: s.peer }); }
  });
  $('put-away').addEventListener('click', () => {
    const s = current();
    if (!s) return;
    local.delete(selected);
    dismissed.set(selected, { state: s.state, lines: s.lines.length });
    selected = null;
    render();
  });
  $('trust-key').addEventListener('click', () => { if (keysFor) command({ type: 'trust', user: keysFor }); });
  $('keys-close').addEventListener('click', () => { $('keys').hidden = true; });
  $('rescan').addEventListener('click', () => command({ type: 'rescan' }));
  $('say-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('say').value;
    const session = selected ? conversations()[selected] : null;
    if (!text.trim() || !session) return;
    if (session.state === 'open') command({ type: 'say_to', user: session.peer, text: text });
    else command({ type: 'msg', to: session.peer, text: text });
    $('say').value = '';
  });
  $('close-session').addEventListener('click', () => {
    const session = selected ? state.sessions[selected] : null;
    if (session) command({ type: 'close', user: session.peer });
  });
  $('pick').addEventListener('change', (e) => { upload(Array.from(e.target.files)); e.target.value = ''; });
  const panel = $('chat-panel');
  panel.addEventListener('dragover', (e) => { e.preventDefault(); panel.classList.add('dragging'); });
  panel.addEventListener('dragleave', () => panel.classList.remove('dragging'));
  panel.addEventListener('drop', (e) => {
    e.preventDefault();
    panel.classList.remove('dragging');
    if (e.dataTransfer && e.dataTransfer.files.length) upload(Array.from(e.dataTransfer.files));
  });
  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('search').value.trim();
    command(text ? { type: 'search', text: text } : { type: 'files', user: null });
  });
  $('all-files').addEventListener('click', () => command({ type: 'files', user: null }));
  // Countdowns and "stalled" move with the clock too.
  setInterval(() => { if (state && state.phase === 'ready') { renderRequests(); renderTransfers(); } }, 1000);
}

async function main() {
  takeToken();
  wire();
  try { await loadState(true); } catch (e) { notice('Cannot reach the client: ' + e.message, true); }
  poll();
}

main();
