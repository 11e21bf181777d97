// Sends COUNT messages of mixed types through @segment/analytics-node, paced over SECONDS, then flushes.
// usage: node node-driver.js URL WRITE_KEY COUNT SECONDS
// One JSON line per fact on stdout: {"created": id} when the SDK made a message, {"ok": [id]} when its
// callback reports it delivered (status < 400), {"gave_up": [id], "reason": …} when the SDK dropped it,
// {"retry": n} for each request sent again, then {"done": true} once closeAndFlush returned.
const { Analytics } = require('@segment/analytics-node')

const [url, writeKey, count, seconds] = [process.argv[2], process.argv[3], +process.argv[4], +process.argv[5]]
const out = fact => process.stdout.write(JSON.stringify(fact) + '\n')

const analytics = new Analytics({
  writeKey, host: url, path: '/v1/batch',
  // Generous: a collector killed for a few seconds costs a few retries, never a give-up. (The default is 10.)
  maxRetries: 20, flushAt: 15, flushInterval: 200, httpRequestTimeout: 10000,
})
// The messageId is made by the SDK's event factory inside track() & co.: read it where it is dispatched.
const dispatch = analytics._dispatch.bind(analytics)
analytics._dispatch = (event, callback) => { out({ created: event.messageId }); dispatch(event, callback) }
analytics.on('error', e => out({ error: String(e.code) + ': ' + String(e.reason) }))
// A request the SDK sends again (after a refused connection, a dropped one, a 5xx): {"retry": n}.
analytics.on('http_request', r => { if (r.headers['X-Retry-Count']) out({ retry: +r.headers['X-Retry-Count'] }) })

const settled = (err, ctx) => {
  const id = ctx.event.messageId
  const failure = err || ctx.failedDelivery()
  out(failure ? { gave_up: [id], reason: String(failure.reason ?? failure) } : { ok: [id] })
}

const kinds = [
  n => analytics.track({ userId: `u${n % 50}`, event: 'Order Completed', properties: { n, revenue: 9.5 } }, settled),
  n => analytics.identify({ userId: `u${n % 50}`, traits: { plan: 'pro', n } }, settled),
  n => analytics.page({ userId: `u${n % 50}`, category: 'Docs', name: 'Home', properties: { path: '/home', n } }, settled),
  n => analytics.screen({ userId: `u${n % 50}`, name: 'Main', properties: { n } }, settled),
  n => analytics.group({ userId: `u${n % 50}`, groupId: `g${n % 7}`, traits: { size: n } }, settled),
  n => analytics.alias({ userId: `u${n % 50}`, previousId: `anon-${n}` }, settled),
]

async function main () {
  const started = Date.now()
  for (let n = 0; n < count; n++) {
    kinds[n % kinds.length](n)
    const due = started + (n + 1) * seconds * 1000 / count
    if (due > Date.now()) await new Promise(resolve => setTimeout(resolve, due - Date.now()))
  }
  await analytics.closeAndFlush({ timeout: 600000 })
  out({ done: true })
}
main().catch(e => { out({ error: String(e && e.stack || e) }); process.exit(1) })
