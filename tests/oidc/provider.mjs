// A real OpenID provider on loopback for the OIDC login tests (issue 13): panva's oidc-provider, certified by the
// OpenID Foundation, with its own small login and consent pages instead of the library's devInteractions (which take
// any login, set no `amr` and load a web font from the internet).
//
//   node provider.mjs            listens on 127.0.0.1 on a free port; prints one JSON line {"issuer": ...} when ready
//
// Environment: OIDC_TEST_ADMIN_TOKEN (required): the bearer token of the admin endpoints below and the initial
// access token of dynamic client registration (RFC 7591, POST /reg). PORT (optional, default 0 = a free one).
//
// What the tests drive, all as JSON under /_admin/ with `Authorization: Bearer <admin token>`:
//   PUT  /_admin/users       [{login, password, sub, name, email, groups, amr}]  replaces the users; the claims are read
//                            at every token request, so a group removed here is gone from the next ID token
//   PUT  /_admin/switches    {"id_token": null | "tampered" | "expired" | "wrong_aud" | "wrong_nonce"}  how the next
//                            ID tokens are spoiled (re-signed with the provider's own key for "expired", "wrong_aud"
//                            and "wrong_nonce", so only that claim is wrong; the payload changed after signing for
//                            "tampered")
//   GET  /_admin/events      what happened: logins, consents, token responses, end_session (RP-initiated logout)
//   DELETE /_admin/events    forget them
//
// Authorization code + PKCE (required for every client, S256 only), discovery, userinfo, RP-initiated logout,
// max_age and prompt=login (the library's interaction policy) are oidc-provider's own. Memory adapter: nothing
// survives the process.
import { randomBytes } from 'node:crypto';
import http from 'node:http';

import * as jose from 'jose';
import Provider, { interactionPolicy } from 'oidc-provider';

const ADMIN_TOKEN = process.env.OIDC_TEST_ADMIN_TOKEN;
if (!ADMIN_TOKEN) {
  console.error('OIDC_TEST_ADMIN_TOKEN is required');
  process.exit(2);
}

const state = {
  users: new Map(), // login -> user
  switches: { id_token: null },
  events: [],
};

function userBySub(sub) {
  for (const user of state.users.values()) if (user.sub === sub) return user;
  return undefined;
}

function event(type, detail = {}) {
  state.events.push({ type, at: new Date().toISOString(), ...detail });
}

const escape = (value) => String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escape(title)} · Test identity provider</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<main>
<h1>${escape(title)}</h1>
${body}
</main>
</body>
</html>`;
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

// --- keys: our own, so the misbehaving switches can re-sign with the key the provider publishes -----------------
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid: 'rgd-test-key-1', alg: 'RS256', use: 'sig' };

const basePolicy = interactionPolicy.base();

const configuration = {
  jwks: { keys: [signingJwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  clients: [],
  scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
  claims: {
    // amr, acr and auth_time ride on the openid scope: in every ID token (the dashboard reads amr for its MFA rule
    // and auth_time for re-authentication), not only when the client asks for them one by one.
    openid: ['sub', 'amr', 'acr', 'auth_time'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // The claims of the granted scopes go into the ID token too (not only userinfo): what Okta and Entra ID do
  // with a groups claim configured on the ID token.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true, initialAccessToken: ADMIN_TOKEN },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = page(
          'Sign out of the test identity provider?',
          `${form}<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`,
        );
      },
      postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Signed out', '<p>You are signed out of the test identity provider.</p>');
      },
    },
  },
  interactions: {
    policy: basePolicy,
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  async findAccount(ctx, sub) {
    const user = userBySub(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        const current = userBySub(sub) || user; // reread: the test may have changed the groups since the login
        return {
          sub,
          name: current.name,
          preferred_username: current.login,
          email: current.email,
          email_verified: current.email_verified ?? true,
          groups: [...(current.groups || [])],
        };
      },
    };
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page(
      'Error at the test identity provider',
      `<p class="error">${escape(out.error)}: ${escape(out.error_description)}</p>`,
    );
  },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    ClientCredentials: 600,
    Grant: 3600,
    IdToken: 600,
    Interaction: 600,
    RefreshToken: 3600,
    Session: 3600,
  },
};

// --- the HTTP server: a free port first, then the provider whose issuer names it --------------------------------
const server = http.createServer();
await new Promise((resolve) => server.listen(Number(process.env.PORT || 0), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;
const provider = new Provider(issuer, configuration);

provider.on('server_error', (ctx, error) => console.error('server_error', error));
provider.on('end_session.success', (ctx) => event('end_session', { client_id: ctx.oidc.client?.clientId }));
provider.on('grant.success', (ctx) => event('token', { client_id: ctx.oidc.client?.clientId }));

// --- spoiling ID tokens on the way out of the token endpoint ----------------------------------------------------
async function spoil(idToken, how, clientId) {
  const claims = jose.decodeJwt(idToken);
  if (how === 'tampered') {
    const [header, payload, signature] = idToken.split('.');
    const changed = { ...claims, groups: [...(claims.groups || []), 'smuggled-admins'] };
    void payload;
    return `${header}.${Buffer.from(JSON.stringify(changed)).toString('base64url')}.${signature}`;
  }
  const now = Math.floor(Date.now() / 1000);
  if (how === 'expired') Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
  else if (how === 'wrong_aud') Object.assign(claims, { aud: `not-${clientId}` });
  else if (how === 'wrong_nonce') Object.assign(claims, { nonce: `not-${claims.nonce}` });
  else throw new Error(`unknown id_token switch ${how}`);
  return new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: signingJwk.kid }).sign(privateKey);
}

provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.status === 200 && ctx.body?.id_token && state.switches.id_token) {
    const how = state.switches.id_token;
    ctx.body = { ...ctx.body, id_token: await spoil(ctx.body.id_token, how, ctx.oidc?.client?.clientId) };
    event('id_token_spoiled', { how });
  }
});

// --- admin API ------------------------------------------------------------------------------------------------
async function admin(req, res, path) {
  const send = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  if (req.headers.authorization !== `Bearer ${ADMIN_TOKEN}`) return send(401, { error: 'admin token required' });
  if (path === '/_admin/users' && req.method === 'PUT') {
    const users = JSON.parse(await readBody(req));
    state.users = new Map(users.map((u) => [u.login, { amr: ['pwd'], groups: [], ...u }]));
    return send(200, { users: [...state.users.keys()] });
  }
  if (path === '/_admin/switches' && req.method === 'PUT') {
    state.switches = { id_token: null, ...JSON.parse(await readBody(req)) };
    return send(200, state.switches);
  }
  if (path === '/_admin/events' && req.method === 'GET') return send(200, state.events);
  if (path === '/_admin/events' && req.method === 'DELETE') {
    state.events = [];
    return send(200, []);
  }
  return send(404, { error: 'no such admin endpoint' });
}

// --- login and consent pages ------------------------------------------------------------------------------------
function loginForm(uid, params, error) {
  return page(
    'Sign in to the test identity provider',
    `${error ? `<p class="error" role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
<p><label for="login">Username</label> <input id="login" name="login" required value="${escape(params.login_hint)}"></p>
<p><label for="password">Password</label> <input id="password" name="password" type="password" required></p>
<p><button type="submit">Sign in</button></p>
</form>
<p><a href="/interaction/${escape(uid)}/abort">Cancel</a></p>`,
  );
}

function consentForm(uid, client, details) {
  const scopes = (details.missingOIDCScope || []).filter((s) => s !== 'openid');
  return page(
    `Allow ${client.clientName || client.clientId}?`,
    `<p>${escape(client.clientName || client.clientId)} asks for: ${scopes.map(escape).join(', ') || 'your identity'}.</p>
<form method="post" action="/interaction/${escape(uid)}/confirm"><button type="submit">Allow</button></form>
<p><a href="/interaction/${escape(uid)}/abort">Deny</a></p>`,
  );
}

async function interaction(req, res, path) {
  const html = (status, body) => {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(body);
  };
  const [, , uid, action] = path.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return html(400, page('Error', '<p>interaction mismatch</p>'));
  const { prompt, params, session } = details;
  const client = await provider.Client.find(params.client_id);

  if (!action && req.method === 'GET') {
    if (prompt.name === 'login') return html(200, loginForm(uid, params));
    if (prompt.name === 'consent') return html(200, consentForm(uid, client, prompt.details));
    return html(501, page('Error', `<p>prompt ${escape(prompt.name)} not implemented</p>`));
  }
  if (action === 'login' && req.method === 'POST') {
    const form = new URLSearchParams(await readBody(req));
    const user = state.users.get(form.get('login'));
    if (!user || user.password !== form.get('password')) {
      event('login_failed', { login: form.get('login') });
      return html(200, loginForm(uid, params, 'Wrong username or password.'));
    }
    event('login', { login: user.login, sub: user.sub, amr: user.amr });
    return provider.interactionFinished(
      req,
      res,
      { login: { accountId: user.sub, amr: user.amr, acr: user.amr.includes('mfa') ? 'mfa' : 'pwd', remember: false } },
      { mergeWithLastSubmission: false },
    );
  }
  if (action === 'confirm' && req.method === 'POST') {
    await readBody(req);
    let grant;
    if (details.grantId) grant = await provider.Grant.find(details.grantId);
    else grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    event('consent', { client_id: params.client_id, scope: params.scope });
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (action === 'abort') {
    return provider.interactionFinished(
      req,
      res,
      { error: 'access_denied', error_description: 'The user cancelled at the identity provider' },
      { mergeWithLastSubmission: false },
    );
  }
  return html(404, page('Error', '<p>not found</p>'));
}

const providerCallback = provider.callback();
server.on('request', async (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  try {
    if (path.startsWith('/_admin/')) return await admin(req, res, path);
    if (path.startsWith('/interaction/')) return await interaction(req, res, path);
    return providerCallback(req, res);
  } catch (error) {
    console.error(error);
    if (!res.headersSent) {
      res.writeHead(400, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page('Error at the test identity provider', `<p class="error">${escape(error.message)}</p>`));
    }
  }
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
console.log(JSON.stringify({ issuer, pid: process.pid }));
