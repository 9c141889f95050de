// Amarula dashboard: a small single-page app over the public HTTP API
// (docs/api.md). No framework, no build step, nothing loaded from elsewhere.
// Everything that comes from the API is put in the page as text (never as
// HTML): push names and event data come from WhatsApp users.
'use strict';

(function () {
  const KEY_STORAGE = 'amarula.adminKey';
  const ID_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
  const OVERVIEW_EVERY = 5000;
  const PAIR_EVERY = 2000;
  const EVENTS_EVERY = 3000;
  const EVENTS_KEPT = 100;

  const app = document.getElementById('app');
  const login = document.getElementById('login');
  const statusEl = document.getElementById('status');
  const forgetBtn = document.getElementById('forget');
  const nav = document.getElementById('nav');

  // ---- admin key --------------------------------------------------------

  function getKey() {
    try { return localStorage.getItem(KEY_STORAGE) || ''; } catch (e) { return ''; }
  }
  function setKey(k) {
    try { localStorage.setItem(KEY_STORAGE, k); } catch (e) { /* private mode: key lives until reload */ }
    memoryKey = k;
  }
  let memoryKey = getKey();

  // A link like /#key=<admin key> stores the key and drops it from the
  // address bar (a fragment is never sent to the server).
  // Checked on every route change: pasting such a link into a tab that
  // already shows the dashboard changes only the fragment.
  function keyFromFragment() {
    const m = /^#key=([^&]+)/.exec(location.hash);
    if (m) {
      setKey(decodeURIComponent(m[1]));
      history.replaceState(null, '', location.pathname + location.search + '#/');
    }
  }

  function forgetKey(message) {
    try { localStorage.removeItem(KEY_STORAGE); } catch (e) { /* ignore */ }
    memoryKey = '';
    stopView();
    showLogin(message);
  }

  function showLogin(message) {
    app.replaceChildren();
    nav.hidden = true;
    forgetBtn.hidden = true;
    login.hidden = false;
    const err = document.getElementById('login-error');
    err.textContent = message || '';
    err.hidden = !message;
    document.getElementById('key-input').focus();
  }

  document.getElementById('login-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    const input = document.getElementById('key-input');
    const k = input.value.trim();
    if (!k) return;
    setKey(k);
    input.value = '';
    login.hidden = true;
    route();
  });
  forgetBtn.addEventListener('click', function () { forgetKey(''); });

  // ---- API --------------------------------------------------------------

  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // api calls a v1 endpoint with the admin key. Paths are relative so the
  // dashboard also works behind a reverse proxy that adds a prefix.
  async function api(path, opts) {
    opts = opts || {};
    const headers = { 'Authorization': 'Bearer ' + memoryKey, 'Accept': opts.accept || 'application/json' };
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    let res;
    try {
      res = await fetch(path.replace(/^\//, ''), { method: opts.method || 'GET', headers: headers, body: body, cache: 'no-store' });
    } catch (e) {
      throw new APIError(0, 'network', 'The node did not answer (' + e.message + ').');
    }
    if (res.status === 401 || res.status === 403) {
      forgetKey(res.status === 401 ? 'The admin key was not accepted.' : 'This key is not the admin key.');
      throw new APIError(res.status, 'auth', 'not authorised');
    }
    if (!res.ok) {
      let code = 'http_' + res.status, message = res.status + ' ' + res.statusText;
      try {
        const e = await res.json();
        if (e && e.error) { code = e.error.code || code; message = e.error.message || code; }
      } catch (e) { /* not JSON */ }
      throw new APIError(res.status, code, message);
    }
    return res;
  }
  async function apiJSON(path, opts) { return (await api(path, opts)).json(); }

  // ---- DOM helpers ------------------------------------------------------

  // h builds an element: h('td', {class: 'x'}, 'text', child, ...).
  function h(tag, attrs) {
    const el = document.createElement(tag);
    for (const k in (attrs || {})) {
      const v = attrs[k];
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const STATE_CLASS = {
    connected: 'ok', alive: 'ok',
    pairing: 'warn', connecting: 'warn', disconnected: 'warn', suspect: 'warn',
    conflict: 'bad', logged_out: 'bad', dead: 'bad', unassigned: 'bad',
    draining: 'info',
  };
  function badge(state) {
    return h('span', { class: 'badge ' + (STATE_CLASS[state] || ''), 'data-state': state }, state || 'unknown');
  }

  function ago(unixSeconds) {
    if (!unixSeconds) return '';
    const s = Math.max(0, Math.round(Date.now() / 1000 - unixSeconds));
    if (s < 60) return s + 's ago';
    if (s < 3600) return Math.floor(s / 60) + 'm ago';
    if (s < 86400) return Math.floor(s / 3600) + 'h ago';
    return Math.floor(s / 86400) + 'd ago';
  }

  function setStatus(text, isError) {
    statusEl.textContent = text || '';
    statusEl.classList.toggle('error', !!isError);
  }

  function table(headers, rows, emptyText) {
    if (!rows.length) return h('p', { class: 'empty' }, emptyText);
    return h('table', null,
      h('thead', null, h('tr', null, ...headers.map(function (t) { return h('th', null, t); }))),
      h('tbody', null, ...rows));
  }

  // ---- views ------------------------------------------------------------

  // A view polls with setTimeout chains that stopView cancels, so nothing
  // keeps running after navigating away.
  let timers = [];
  let viewSeq = 0;
  function stopView() {
    viewSeq++;
    timers.forEach(clearTimeout);
    timers = [];
  }
  // poll runs fn now and then every ms after each completion, while the view
  // that started it is current.
  function poll(fn, ms) {
    const seq = viewSeq;
    const tick = async function () {
      if (seq !== viewSeq) return;
      try { await fn(); } catch (e) {
        if (e.code !== 'auth') setStatus(e.message, true);
        if (e.code === 'auth') return;
      }
      if (seq === viewSeq) timers.push(setTimeout(tick, ms));
    };
    tick();
  }

  function overview() {
    const nodesCard = h('section', { class: 'card', id: 'nodes' }, h('h2', null, 'Cluster'), h('p', { class: 'empty' }, 'Loading…'));
    const profilesCard = h('section', { class: 'card', id: 'profiles' }, h('h2', null, 'Profiles'), h('p', { class: 'empty' }, 'Loading…'));
    app.replaceChildren(nodesCard, h('div', { class: 'grid' }, profilesCard, createCard()));

    // The two cards load independently: a node without the cluster view
    // (or with etcd down) still lists its profiles.
    poll(async function () {
      const [cluster, list] = await Promise.allSettled([apiJSON('v1/cluster'), apiJSON('v1/profiles')]);
      for (const r of [cluster, list]) {
        if (r.status === 'rejected' && r.reason.code === 'auth') throw r.reason;
      }
      if (cluster.status === 'fulfilled') renderCluster(nodesCard, cluster.value);
      else cardError(nodesCard, 'Cluster', cluster.reason);
      if (list.status === 'fulfilled') renderProfiles(profilesCard, list.value.profiles || []);
      else cardError(profilesCard, 'Profiles', list.reason);
      const failed = [cluster, list].filter(function (r) { return r.status === 'rejected'; });
      if (failed.length) setStatus(failed[0].reason.message, true);
      else setStatus('Updated ' + new Date().toLocaleTimeString());
    }, OVERVIEW_EVERY);
  }

  function cardError(card, title, err) {
    card.replaceChildren(h('h2', null, title), h('p', { class: 'error card-error' }, err.message));
  }

  function renderCluster(card, c) {
    const nodes = c.nodes || [];
    const total = c.profiles_total || 0;
    const alive = nodes.filter(function (n) { return n.state === 'alive'; }).length;
    const rows = nodes.map(function (n) {
      const share = total > 0 ? Math.round(100 * (n.profiles || 0) / total) : 0;
      return h('tr', { 'data-node': n.name },
        h('td', null, h('b', null, n.name)),
        h('td', { class: 'mono' }, n.address || ''),
        h('td', null, badge(n.state)),
        h('td', { class: 'count' }, String(n.profiles || 0)),
        h('td', null, h('meter', { min: 0, max: Math.max(total, 1), value: n.profiles || 0, title: share + '% of the profiles' }),
          h('span', { class: 'pct' }, share + '%')),
        h('td', { class: 'mono' }, n.version || ''));
    });
    card.replaceChildren(
      h('h2', null, 'Cluster'),
      h('div', { class: 'summary' },
        h('div', null, h('b', { id: 'nodes-alive' }, alive + ' / ' + nodes.length), h('span', null, 'nodes alive')),
        h('div', null, h('b', { id: 'profiles-total' }, String(total)), h('span', null, 'profiles')),
        h('div', null, h('b', { id: 'profiles-unassigned', class: c.unassigned ? 'error' : '' }, String(c.unassigned || 0)), h('span', null, 'unassigned'))),
      table(['Node', 'Address', 'State', 'Profiles', 'Load', 'Version'], rows, 'No node is known yet.'));
  }

  function renderProfiles(card, profiles) {
    profiles.sort(function (a, b) { return a.id < b.id ? -1 : a.id > b.id ? 1 : 0; });
    const rows = profiles.map(function (p) {
      const who = p.push_name || p.jid ? h('span', null, p.push_name || '', p.push_name && p.jid ? ' ' : '',
        p.jid ? h('span', { class: 'mono' }, p.jid) : '') : h('span', { class: 'empty' }, '—');
      const canPair = p.state !== 'connected';
      return h('tr', { 'data-profile': p.id },
        h('td', null, h('b', null, p.id)),
        h('td', null, badge(p.state)),
        h('td', { class: 'owner' }, p.owner || '—'),
        h('td', null, who),
        h('td', { title: p.connected_since ? new Date(p.connected_since * 1000).toISOString() : '' }, ago(p.connected_since)),
        h('td', { class: 'actions' },
          canPair ? h('a', { href: '#/pair/' + encodeURIComponent(p.id), class: 'pair-link' }, 'Pair') : null,
          h('a', { href: '#/events/' + encodeURIComponent(p.id), class: 'events-link' }, 'Events')));
    });
    card.replaceChildren(h('h2', null, 'Profiles'),
      table(['Profile', 'State', 'Owner', 'Account', 'Connected', ''], rows, 'No profile yet: create one.'));
  }

  function createCard() {
    const err = h('p', { class: 'error', id: 'create-error', hidden: true });
    const idInput = h('input', { type: 'text', id: 'create-id', name: 'id', required: true, maxlength: 63, placeholder: 'alice', spellcheck: 'false', autocomplete: 'off' });
    const urlInput = h('input', { type: 'url', id: 'create-webhook', name: 'webhook', placeholder: 'where your application receives events' });
    const secretInput = h('input', { type: 'password', id: 'create-secret', name: 'secret', autocomplete: 'new-password' });
    const eventsInput = h('input', { type: 'text', id: 'create-events', name: 'events', placeholder: 'message.*, session.*' });
    const button = h('button', { type: 'submit' }, 'Create profile');
    const form = h('form', { class: 'stack', id: 'create-form', novalidate: true },
      h('label', { for: 'create-id' }, 'Profile id'), idInput,
      h('p', { class: 'hint' }, 'Lower-case letters, digits, "-" and "_"; up to 63 characters.'),
      h('label', { for: 'create-webhook' }, 'Webhook URL (optional)'), urlInput,
      h('label', { for: 'create-secret' }, 'Webhook secret'), secretInput,
      h('p', { class: 'hint' }, 'Signs deliveries (X-Amarula-Signature, HMAC-SHA256).'),
      h('label', { for: 'create-events' }, 'Webhook events'), eventsInput,
      button, err);
    form.addEventListener('submit', async function (ev) {
      ev.preventDefault();
      err.hidden = true;
      const id = idInput.value.trim();
      if (!ID_PATTERN.test(id)) {
        err.textContent = 'Invalid id: use lower-case letters, digits, "-" and "_" (start with a letter or digit).';
        err.hidden = false;
        return;
      }
      const body = { id: id };
      const url = urlInput.value.trim();
      if (url) {
        body.webhook = { url: url };
        if (secretInput.value) body.webhook.secret = secretInput.value;
        const events = eventsInput.value.split(',').map(function (s) { return s.trim(); }).filter(Boolean);
        if (events.length) body.webhook.events = events;
      }
      button.disabled = true;
      try {
        await apiJSON('v1/profiles', { method: 'POST', body: body });
        location.hash = '#/pair/' + encodeURIComponent(id);
      } catch (e) {
        if (e.code !== 'auth') {
          err.textContent = e.status === 409 ? 'A profile named "' + id + '" already exists.' : e.message;
          err.hidden = false;
        }
      } finally {
        button.disabled = false;
      }
    });
    return h('section', { class: 'card', id: 'create' }, h('h2', null, 'New profile'), form);
  }

  function pairing(id) {
    const title = h('h1', null, 'Link ' + id);
    const state = h('span', { id: 'pair-state' });
    const box = h('div', { class: 'qr-box', id: 'qr-box' }, h('span', { class: 'placeholder' }, 'Waiting for a QR code…'));
    const message = h('p', { id: 'pair-message' });
    const card = h('section', { class: 'card pair', id: 'pair-card', 'data-profile': id },
      box,
      h('div', null, title, h('p', null, 'State: ', state), message,
        h('ol', { id: 'pair-steps' },
          h('li', null, 'Open WhatsApp on the phone.'),
          h('li', null, 'Settings → Linked devices → Link a device.'),
          h('li', null, 'Point the phone at this code. It refreshes by itself.')),
        h('p', null, h('a', { href: '#/events/' + encodeURIComponent(id) }, 'Events of ' + id), ' · ', h('a', { href: '#/' }, 'Back'))));
    app.replaceChildren(h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Profiles'), ' / ' + id), card);

    let objectURL = '';
    let lastCode = '';
    const showLinked = function (p) {
      card.classList.add('linked');
      title.textContent = id + ' is linked';
      message.textContent = 'Connected' + (p.push_name ? ' as ' + p.push_name : '') + (p.jid ? ' (' + p.jid + ')' : '') + '.';
      message.className = 'ok-text';
      document.getElementById('pair-steps').hidden = true;
      box.replaceChildren(h('span', { class: 'check', 'aria-label': 'linked' }, '✓'));
      if (objectURL) { URL.revokeObjectURL(objectURL); objectURL = ''; }
    };
    poll(async function () {
      const p = await apiJSON('v1/profiles/' + encodeURIComponent(id));
      state.replaceChildren(badge(p.state));
      if (p.state === 'connected') { showLinked(p); stopView(); return; }
      card.classList.remove('linked');
      try {
        const res = await api('v1/profiles/' + encodeURIComponent(id) + '/qr', { accept: 'image/png' });
        const type = res.headers.get('Content-Type') || '';
        if (type.startsWith('image/png')) {
          const blob = await res.blob();
          const next = URL.createObjectURL(blob);
          const img = h('img', { id: 'qr', alt: 'QR code for ' + id, src: next });
          box.replaceChildren(img);
          if (objectURL) URL.revokeObjectURL(objectURL);
          objectURL = next;
        } else {
          // A node that cannot render PNG answers JSON: show the code text.
          const q = await res.json();
          if (q.code !== lastCode) {
            lastCode = q.code;
            box.replaceChildren(h('code', { class: 'code-text', id: 'qr-code' }, q.code));
          }
        }
        message.textContent = '';
        message.className = '';
      } catch (e) {
        if (e.code === 'auth') throw e;
        if (e.status === 409) {
          message.textContent = 'The profile is already paired; waiting for it to connect.';
        } else if (e.status === 501) {
          const q = await apiJSON('v1/profiles/' + encodeURIComponent(id) + '/qr');
          box.replaceChildren(h('code', { class: 'code-text', id: 'qr-code' }, q.code));
        } else {
          message.textContent = 'No QR code yet: ' + e.message;
        }
        message.className = '';
      }
      setStatus('Updated ' + new Date().toLocaleTimeString());
    }, PAIR_EVERY);
  }

  function events(id) {
    const body = h('div', null, h('p', { class: 'empty' }, 'Loading…'));
    app.replaceChildren(
      h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Profiles'), ' / ' + id + ' / events'),
      h('section', { class: 'card events', id: 'events', 'data-profile': id }, h('h2', null, 'Recent events of ' + id), body));
    let cursor = '0';
    let kept = [];
    poll(async function () {
      // Page forward from the last cursor; keep the newest EVENTS_KEPT.
      for (let page = 0; page < 50; page++) {
        const r = await apiJSON('v1/profiles/' + encodeURIComponent(id) + '/events?after=' + encodeURIComponent(cursor) + '&limit=100');
        const evs = r.events || [];
        const seen = new Set(kept.map(function (e) { return e.id; }));
        kept = kept.concat(evs.filter(function (e) { return !seen.has(e.id); })).slice(-EVENTS_KEPT);
        if (evs.length) cursor = evs[evs.length - 1].id;
        if (r.next) cursor = r.next;
        if (!evs.length || !r.next) break;
      }
      const rows = kept.slice().reverse().map(function (e) {
        return h('tr', { 'data-event': e.id },
          h('td', { class: 'time', title: e.time }, e.time ? new Date(e.time).toLocaleString() : ''),
          h('td', null, h('span', { class: 'badge info' }, e.type)),
          h('td', { class: 'data' }, summarize(e)));
      });
      body.replaceChildren(table(['Time', 'Type', 'Data'], rows, 'No event yet.'));
      setStatus('Updated ' + new Date().toLocaleTimeString());
    }, EVENTS_EVERY);
  }

  function summarize(e) {
    const d = e.data || {};
    if (e.type && e.type.startsWith('message.') && (d.from || d.text)) {
      return [d.from, d.text].filter(Boolean).join(': ').slice(0, 160);
    }
    const s = JSON.stringify(d);
    return s.length > 160 ? s.slice(0, 157) + '…' : s;
  }

  // ---- routing ----------------------------------------------------------

  function route() {
    stopView();
    setStatus('');
    keyFromFragment();
    if (!memoryKey) { showLogin(''); return; }
    login.hidden = true;
    nav.hidden = false;
    forgetBtn.hidden = false;
    const hash = location.hash || '#/';
    let m;
    if ((m = /^#\/pair\/([^/]+)$/.exec(hash))) pairing(decodeURIComponent(m[1]));
    else if ((m = /^#\/events\/([^/]+)$/.exec(hash))) events(decodeURIComponent(m[1]));
    else overview();
  }

  window.addEventListener('hashchange', route);
  route();
})();
