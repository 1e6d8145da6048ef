"""paho-mqtt (v2 API) against the broker on 127.0.0.1:PORT, with paho's
defaults (MQTT 3.1.1, keep-alive 60): subscribe at QoS 2, publish at QoS
0, 1 and 2, receive each at its own QoS (MQTT-3.8.4-6). Prints one JSON
line; exit 0 on success. Usage: paho_client.py PORT CLIENT_ID"""

import json
import sys
import threading

import paho.mqtt.client as mqtt

port, client_id = int(sys.argv[1]), sys.argv[2]
subscribed = threading.Event()
done = threading.Event()
result = {"connect": None, "granted": None, "received": {}, "published": []}


def on_connect(client, userdata, flags, reason_code, properties):
    result["connect"] = str(reason_code)
    result["session_present"] = bool(flags.session_present)
    client.subscribe("paho/#", qos=2)


def on_subscribe(client, userdata, mid, reason_code_list, properties):
    result["granted"] = [rc.value for rc in reason_code_list]
    subscribed.set()


def on_publish(client, userdata, mid, reason_code, properties):
    result["published"].append(mid)


def on_message(client, userdata, msg):
    result["received"][msg.topic] = {
        "payload": msg.payload.decode(),
        "qos": msg.qos,
        "retain": bool(msg.retain),
    }
    if len(result["received"]) == 3:
        done.set()


client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True
)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_publish = on_publish
client.on_message = on_message
client.connect("127.0.0.1", port)  # keepalive defaults to 60
client.loop_start()
ok = subscribed.wait(10)
if ok:
    infos = [client.publish(f"paho/{q}", f"q{q}", qos=q) for q in (0, 1, 2)]
    for info in infos:
        info.wait_for_publish(10)
    ok = done.wait(10)
client.disconnect()
client.loop_stop()
result["ok"] = ok
print(json.dumps(result))
sys.exit(0 if ok else 1)
