// Drives a running Tessera with an independent, strict OAuth2 client library, panva's
// oauth4webapi, the way an external partner and a resource server would:
// - RFC 8414 discovery, with the library's exact issuer check;
// - client credentials with client_secret_basic and client_secret_post (RFC 6749 §4.4, §5.1);
// - the JWT validated as an RFC 9068 access token against the published JWKS: typ at+jwt, iss,
//   aud, exp, sub, iat, jti, client_id and the EdDSA signature;
// - RFC 7662 introspection by a resource server, of a valid token and of junk;
// - RFC 8693 token exchange for a user, its act claim, and the user token validated as above;
// - RFC 6749 §5.2 errors: unsupported_grant_type, invalid_scope, invalid_client (401 with
//   WWW-Authenticate);
// - RFC 7009 revocation, of a token and of a string that never was one, then introspection.
// Run by .ci/interop, which starts the server and creates the clients:
//   node oauth4webapi.mjs BASE_URL CLIENT_ID CLIENT_SECRET RS_ID RS_SECRET USER_ID AUDIENCE
// The partner client must have the scopes orders:read and orders:write, the audience AUDIENCE and
// --act-as tenant; the resource server the introspect capability. Prints one line per check and
// never a token or secret; exits 1 if any check failed.
import * as oauth from 'oauth4webapi';

const [base, id, secret, rsId, rsSecret, user, audience] = process.argv.slice(2);
if (!audience) {
  console.error('usage: node oauth4webapi.mjs BASE_URL CLIENT_ID CLIENT_SECRET RS_ID RS_SECRET USER_ID AUDIENCE');
  process.exit(2);
}
// Plain HTTP on loopback: the library refuses it unless told.
const insecure = { [oauth.allowInsecureRequests]: true };
const issuer = new URL(base);
const partner = { client_id: id };
const rs = { client_id: rsId };
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const USER_ID_TYPE = 'urn:tessera:params:oauth:token-type:user_id';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

let failures = 0;
function check(name, cond, detail = '') {
  console.log(`${cond ? 'ok  ' : 'FAIL'} ${name}${detail ? ` (${detail})` : ''}`);
  if (!cond) failures++;
}
async function step(name, fn) {
  try {
    await fn();
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e.name} ${e.code ?? ''} ${e.message}`);
  }
}
// oauth4webapi 3.8 has request helpers for the grants it knows; token exchange goes by hand and
// its response through the library's generic token-endpoint response checks.
function basicAuth(clientId, clientSecret) {
  const pair = `${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`;
  return `Basic ${Buffer.from(pair).toString('base64')}`;
}
function grantRequest(as, clientSecret, grantType, params) {
  return fetch(as.token_endpoint, {
    method: 'POST',
    headers: {
      authorization: basicAuth(id, clientSecret),
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    },
    body: new URLSearchParams({ grant_type: grantType, ...params }),
  });
}
// The RFC 6749 §5.2 error code of a rejected call. A 401 with WWW-Authenticate comes back as the
// library's WWWAuthenticateChallengeError, with the response body still unread.
async function errorCode(e) {
  if (e.error) return e.error;
  const body = await e.response?.clone().json().catch(() => ({}));
  return body?.error;
}
async function expectError(name, call, status, code, more = () => true) {
  try {
    await call();
    check(name, false, 'the call succeeded');
  } catch (e) {
    const got = await errorCode(e);
    check(name, e.status === status && got === code && more(e), `${e.status} ${got}`);
  }
}
function bearerRequest(token) {
  return new Request('https://orders.example/orders', { headers: { authorization: `Bearer ${token}` } });
}
const jwtOptions = { ...insecure, signingAlgorithms: ['EdDSA'] };

// The library itself refuses metadata whose issuer is not the one asked for (RFC 8414 §3.3); a
// refusal ends the run here, since every later check needs the metadata.
let as;
try {
  as = await oauth.processDiscoveryResponse(
    issuer,
    await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }),
  );
} catch (e) {
  console.log(`FAIL RFC 8414 discovery: ${e.name} ${e.code ?? ''} ${e.message}`);
  console.log('interop: discovery failed, nothing else checked');
  process.exit(1);
}
check('RFC 8414 discovery, the issuer is the base URL', as.issuer === base.replace(/\/$/, ''), as.issuer);
for (const field of ['token_endpoint', 'jwks_uri', 'introspection_endpoint', 'revocation_endpoint'])
  check(`metadata names ${field}`, typeof as[field] === 'string');

let clientToken;
await step('client credentials, client_secret_basic', async () => {
  const params = new URLSearchParams({ scope: 'orders:read' });
  const resp = await oauth.clientCredentialsGrantRequest(as, partner, oauth.ClientSecretBasic(secret), params, insecure);
  check('token response is not cached', resp.headers.get('cache-control') === 'no-store');
  const t = await oauth.processClientCredentialsResponse(as, partner, resp);
  clientToken = t.access_token;
  check('client credentials, client_secret_basic', t.token_type === 'bearer' && t.scope === 'orders:read' && t.expires_in > 0);
});
await step('client credentials, client_secret_post', async () => {
  const resp = await oauth.clientCredentialsGrantRequest(as, partner, oauth.ClientSecretPost(secret), new URLSearchParams(), insecure);
  const t = await oauth.processClientCredentialsResponse(as, partner, resp);
  check('client credentials, client_secret_post, all the client\'s scopes', t.scope === 'orders:read orders:write');
});
await step('RFC 9068 validation of the client token', async () => {
  const claims = await oauth.validateJwtAccessToken(as, bearerRequest(clientToken), audience, jwtOptions);
  check('RFC 9068 validation of the client token against the JWKS', claims.client_id === id && claims.sub === id);
});
await step('introspection', async () => {
  const auth = oauth.ClientSecretBasic(rsSecret);
  const active = await oauth.processIntrospectionResponse(as, rs, await oauth.introspectionRequest(as, rs, auth, clientToken, insecure));
  check('introspection of a valid token', active.active === true && active.client_id === id && active.scope === 'orders:read');
  const junk = await oauth.processIntrospectionResponse(as, rs, await oauth.introspectionRequest(as, rs, auth, 'not-a-token', insecure));
  check('introspection of junk: only active false', junk.active === false && Object.keys(junk).length === 1);
});
await expectError(
  'introspection with a wrong secret: invalid_client',
  async () => oauth.processIntrospectionResponse(as, rs, await oauth.introspectionRequest(as, rs, oauth.ClientSecretBasic('wrong'), clientToken, insecure)),
  401,
  'invalid_client',
);
await step('token exchange for a user', async () => {
  const params = { subject_token: user, subject_token_type: USER_ID_TYPE, scope: 'orders:read' };
  const t = await oauth.processGenericTokenEndpointResponse(as, partner, await grantRequest(as, secret, TOKEN_EXCHANGE, params));
  check('token exchange for a user', t.issued_token_type === ACCESS_TOKEN_TYPE && t.token_type === 'bearer' && t.scope === 'orders:read');
  const claims = await oauth.validateJwtAccessToken(as, bearerRequest(t.access_token), audience, jwtOptions);
  check('RFC 9068 validation of the user token; act names the partner', claims.sub === user && claims.act?.sub === id);
});
await expectError(
  'an unknown grant type: unsupported_grant_type',
  async () => oauth.processGenericTokenEndpointResponse(as, partner, await grantRequest(as, secret, 'urn:example:unknown', {})),
  400,
  'unsupported_grant_type',
);
await expectError(
  'a scope the client does not have: invalid_scope',
  async () => oauth.processClientCredentialsResponse(as, partner, await oauth.clientCredentialsGrantRequest(as, partner, oauth.ClientSecretBasic(secret), new URLSearchParams({ scope: 'admin' }), insecure)),
  400,
  'invalid_scope',
);
await expectError(
  'a wrong client secret: 401 invalid_client with WWW-Authenticate: Basic',
  async () => oauth.processClientCredentialsResponse(as, partner, await oauth.clientCredentialsGrantRequest(as, partner, oauth.ClientSecretBasic('wrong'), new URLSearchParams(), insecure)),
  401,
  'invalid_client',
  (e) => /^Basic /i.test(e.response?.headers.get('www-authenticate') ?? ''),
);
await step('revocation', async () => {
  const auth = oauth.ClientSecretBasic(secret);
  for (const [what, token] of [['a token', clientToken], ['a string that never was one', 'never-issued']]) {
    const resp = await oauth.revocationRequest(as, partner, auth, token, insecure);
    const status = resp.status;
    await oauth.processRevocationResponse(resp);
    check(`revocation of ${what}: 200 (RFC 7009 §2.2)`, status === 200, String(status));
  }
  const after = await oauth.processIntrospectionResponse(as, rs, await oauth.introspectionRequest(as, rs, oauth.ClientSecretBasic(rsSecret), clientToken, insecure));
  check('a revoked token introspects inactive', after.active === false);
});

console.log(failures ? `interop: ${failures} failed` : 'interop: all passed');
process.exit(failures ? 1 : 0);
