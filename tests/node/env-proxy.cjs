// Node 20's built-in fetch ignores HTTPS_PROXY (NODE_USE_ENV_PROXY only exists in newer Node
// releases). Preloading this file (`node --require ./env-proxy.cjs app.js`, or through
// NODE_OPTIONS) installs undici's EnvHttpProxyAgent as the global dispatcher, which the
// built-in fetch uses: it reads HTTPS_PROXY / NO_PROXY, and TLS trusts NODE_EXTRA_CA_CERTS.
const { EnvHttpProxyAgent, setGlobalDispatcher } = require('undici');

setGlobalDispatcher(new EnvHttpProxyAgent());
