// MQTT.js client for tests/transports.rs: connects to the URL (ws:// or wss://), subscribes to
// the topic, publishes to it and exits 0 once its own message comes back (1 on error/timeout).
// Usage: node pubsub.js URL TOPIC [CA_PEM]
"use strict";
const fs = require("fs");
const mqtt = require("mqtt");

const [url, topic, ca] = process.argv.slice(2);
const opts = { clientId: "mqttjs-" + process.pid, connectTimeout: 5000, reconnectPeriod: 0 };
if (url.startsWith("wss:") && ca) {
  opts.ca = fs.readFileSync(ca);
  opts.rejectUnauthorized = true;
}
const fail = (why) => {
  console.error("failed:", why);
  process.exit(1);
};
const timer = setTimeout(() => fail("timeout"), 15000);
const client = mqtt.connect(url, opts);
client.on("error", (e) => fail(e.message));
client.on("connect", () => {
  client.subscribe(topic, { qos: 1 }, (err) => {
    if (err) return fail(err.message);
    client.publish(topic, "hello-mqttjs", { qos: 1 });
  });
});
client.on("message", (t, payload) => {
  if (t === topic && payload.toString() === "hello-mqttjs") {
    console.log("received");
    clearTimeout(timer);
    client.end(false, {}, () => process.exit(0));
  }
});
