// A Sparkplug host for the integration tests (tests/it/sparkplug.rs), on
// Eclipse Tahu's own JavaScript payload library (npm sparkplug-payload)
// and MQTT.js: it decodes everything the edge node publishes with a
// decoder that is not fieldgate's, and encodes the commands it is told to
// send.
// Usage: node sparkplug_host.js PORT
// stdout: one JSON line per message received under spBv1.0/#:
//   {"topic": ..., "payload": <Tahu's decodePayload, 64-bit numbers as numbers>}
//   (STATE messages: {"topic": ..., "json": ...}); first {"ready": true}.
// stdin: one JSON line per message to publish:
//   {"topic": ..., "sparkplug": <payload for Tahu's encodePayload>} or
//   {"topic": ..., "text": "...", "retain": bool}; each answered with
//   {"published": topic} once the broker acknowledged it (QoS 1).
const mqtt = require("mqtt");
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const Long = require("long");
const readline = require("readline");

const port = Number(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o, (k, v) => (Long.isLong(v) ? v.toNumber() : v)) + "\n");
const fail = (why) => { console.error(why); process.exit(1); };

const c = mqtt.connect({ host: "127.0.0.1", port, clientId: "tahu-js-host-" + process.pid, reconnectPeriod: 0 });
c.on("error", (e) => fail("mqtt error: " + e.message));
c.on("close", () => process.exit(0));
c.on("connect", () => {
  c.subscribe("spBv1.0/#", { qos: 1 }, (err) => {
    if (err) fail("subscribe: " + err.message);
    out({ ready: true });
  });
});
c.on("message", (topic, payload) => {
  if (topic.startsWith("spBv1.0/STATE/")) {
    out({ topic, json: JSON.parse(payload.toString()) });
    return;
  }
  try {
    out({ topic, payload: sparkplug.decodePayload(payload) });
  } catch (e) {
    out({ topic, error: String(e) });
  }
});
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const m = JSON.parse(line);
  const body = m.sparkplug !== undefined ? Buffer.from(sparkplug.encodePayload(m.sparkplug)) : m.text;
  c.publish(m.topic, body, { qos: 1, retain: !!m.retain }, (err) => {
    if (err) fail("publish: " + err.message);
    out({ published: m.topic });
  });
});
