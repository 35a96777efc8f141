// Fetches https://api.github.com/user with Node's built-in fetch and prints the status and
// the `host` the upstream saw; run with `--require ./env-proxy.cjs` to go through a proxy.
const resp = await fetch('https://api.github.com/user', {
  headers: { authorization: 'Bearer placeholder' },
});
const body = await resp.json();
console.log(JSON.stringify({ status: resp.status, host: body.host }));
