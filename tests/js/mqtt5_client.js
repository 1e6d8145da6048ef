// MQTT.js (the client inside Node-RED and MQTTX) at protocol 5 against the
// gateway's broker: connect, subscribe with a subscription identifier,
// publish with user properties, a response topic and correlation data, and
// check they arrive unchanged; the client offers topic aliases, so the second
// copy comes by the broker's alias, which MQTT.js must resolve to the same
// topic. Exit 0 on success; a message and 1 otherwise.
// Usage: node mqtt5_client.js PORT
const mqtt = require("mqtt");
const port = Number(process.argv[2]);
const fail = (why) => { console.error(why); process.exit(1); };
setTimeout(() => fail("timed out"), 10000);
const c = mqtt.connect({ host: "127.0.0.1", port, protocolVersion: 5, clientId: "mqttjs-5", reconnectPeriod: 0,
  properties: { topicAliasMaximum: 5 } });
const message = {
  qos: 1,
  properties: {
    userProperties: { line: "7", shift: "night" },
    responseTopic: "js/reply",
    correlationData: Buffer.from("c-1"),
    contentType: "text/plain",
  },
};
c.on("error", (e) => fail("error: " + e.message));
c.on("connect", (ack) => {
  const p = ack.properties || {};
  if (!(p.topicAliasMaximum > 0)) fail("CONNACK without a topic alias maximum: " + JSON.stringify(ack));
  c.subscribe("js/#", { qos: 1, properties: { subscriptionIdentifier: 42 } }, (err, granted) => {
    if (err) fail("subscribe: " + err.message);
    if (granted[0].qos !== 1) fail("granted " + JSON.stringify(granted));
    c.publish("js/t", "from mqtt.js", message);
    c.publish("js/t", "from mqtt.js", message);
  });
});
let received = 0;
c.on("message", (topic, payload, packet) => {
  const p = packet.properties || {};
  const ok = topic === "js/t"
    && payload.toString() === "from mqtt.js"
    && p.userProperties && p.userProperties.line === "7" && p.userProperties.shift === "night"
    && p.responseTopic === "js/reply"
    && p.correlationData && p.correlationData.toString() === "c-1"
    && p.contentType === "text/plain"
    && (p.subscriptionIdentifier === 42 || (Array.isArray(p.subscriptionIdentifier) && p.subscriptionIdentifier.includes(42)))
    && p.topicAlias === 1;
  if (!ok) fail("unexpected message: " + JSON.stringify({ topic, payload: payload.toString(), properties: p }));
  received += 1;
  if (received === 2) c.end(false, {}, () => process.exit(0));
});
