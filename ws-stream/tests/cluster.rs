//! Several real `ws-stream` processes on one store and one Redis behave as one service: every
//! viewer, on whichever instance, gets every acknowledged comment exactly once and in id order,
//! also while senders on every instance post at once, when an instance dies under its viewers,
//! and when Redis itself goes away and comes back.
//!
//! These need Redis (`DANMAKU_TEST_REDIS`, or `redis-server` for the test's own); without it they
//! say they skipped, except under `CI=true`, where they fail.

mod helpers;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use helpers::{http, http_from, ids};
use serde_json::{Value, json};
use service_kit::testing::{
    Binary, OwnRedis, RELAXED, TestStore, WsClient, cluster_bus, get_json, wait_for_bus,
    wait_for_json,
};
use tokio::time::{Instant, timeout};

/// How long a viewer may wait for what it must receive.
const PATIENCE: Duration = Duration::from_secs(30);

/// Starts an instance on `store` with the bus settings `bus`.
fn instance(store: &TestStore, bus: &[String]) -> Binary {
    instance_with(store, bus, RELAXED)
}

/// Starts an instance on `store` with the bus settings `bus` and `args`.
fn instance_with(store: &TestStore, bus: &[String], args: &[&str]) -> Binary {
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["--max-connections-per-client", "1000", "--workers", "1"]);
    args.extend(bus.iter().map(String::as_str));
    Binary::start(env!("CARGO_BIN_EXE_ws-stream"), store, &args)
}

/// Waits until every instance's `/healthz` says its bus is connected.
async fn wait_until_connected(instances: &[&Binary]) {
    let bases: Vec<&str> = instances.iter().map(|i| i.base.as_str()).collect();
    wait_for_bus(&bases).await;
}

/// A room made through `instance`.
async fn new_room(instance: &Binary) -> String {
    new_hosted_room(instance).await.0
}

/// A room made through `instance`: its id and host token.
async fn new_hosted_room(instance: &Binary) -> (String, String) {
    let created: Value = http()
        .post(format!("{}/api/rooms", instance.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        created["room"].as_str().unwrap().to_owned(),
        created["host_token"].as_str().unwrap().to_owned(),
    )
}

/// What one viewer saw: the comment ids in the order they came (history and pushes), and the
/// last viewer count it was told.
#[derive(Debug, Default, Clone)]
struct Seen {
    ids: Vec<i64>,
    viewers: Option<u64>,
}

impl Seen {
    fn take(&mut self, frame: &Value) {
        match frame["type"].as_str() {
            Some("welcome") => {
                self.ids.extend(ids(&frame["history"]));
                self.viewers = frame["viewers"].as_u64();
            }
            Some("danmaku") => self.ids.extend(ids(&frame["items"])),
            Some("viewers") => self.viewers = frame["count"].as_u64(),
            _ => {}
        }
    }

    fn has_all(&self, wanted: &HashSet<i64>) -> bool {
        let seen: HashSet<i64> = self.ids.iter().copied().collect();
        wanted.is_subset(&seen)
    }
}

/// Joins `room` on `base` as `name` (resuming after `since` when given); returns the client and
/// what its welcome held.
async fn join(base: &str, room: &str, name: &str, since: Option<i64>) -> (WsClient, Value) {
    let since = since.map(|id| format!("&since={id}")).unwrap_or_default();
    let mut client = WsClient::connect(&format!("{base}/ws/live/{room}?name={name}{since}")).await;
    let welcome = client.recv_type("welcome").await;
    (client, welcome)
}

/// Reads `client` until `done` says so about what it saw, or the connection ends, or
/// [`PATIENCE`] passes; returns what it saw and whether the connection is still open.
async fn watch(client: &mut WsClient, seen: &mut Seen, done: impl Fn(&Seen) -> bool) -> bool {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = Instant::now() + PATIENCE;
    while !done(seen) && Instant::now() < deadline {
        // `done` may change its mind without a frame: look again every so often.
        match timeout(Duration::from_millis(200), client.stream.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Text(text)))) => {
                seen.take(&serde_json::from_str(&text).expect("the server sends JSON"));
            }
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => return false,
            Ok(Some(Ok(_))) => {}
        }
    }
    true
}

/// Sends `count` comments through `base` as `name`, one after another; their ids.
async fn send_all(base: String, room: String, name: String, count: usize) -> Vec<i64> {
    let (mut client, _) = join(&base, &room, &name, None).await;
    let mut acked = Vec::new();
    for n in 0..count {
        let text = format!("{name}-{n}");
        client
            .send_json(&json!({"type": "send", "text": text, "ref": text}))
            .await;
        loop {
            let frame = client.recv_json().await;
            if frame["type"] == "ack" && frame["ref"] == text.as_str() {
                acked.push(frame["item"]["id"].as_i64().unwrap());
                break;
            }
            assert_ne!(frame["type"], "error", "{frame}");
        }
    }
    acked
}

/// Every viewer saw exactly `wanted`, each once, in id order.
fn assert_exactly_once_in_order(seen: &[Seen], wanted: &HashSet<i64>) {
    let mut expected: Vec<i64> = wanted.iter().copied().collect();
    expected.sort_unstable();
    for (n, viewer) in seen.iter().enumerate() {
        assert_eq!(
            viewer.ids, expected,
            "viewer {n} did not see every comment exactly once in id order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewers_on_three_instances_see_every_comment_once_in_id_order() {
    let Some(bus) = cluster_bus() else { return };
    let store = TestStore::new("live");
    let instances: Vec<Binary> = (0..3).map(|_| instance(&store, &bus)).collect();
    wait_until_connected(&instances.iter().collect::<Vec<_>>()).await;
    let room = new_room(&instances[0]).await;

    // 30 viewers, 10 on each instance.
    let mut viewers = Vec::new();
    for n in 0..30 {
        let base = &instances[n % 3].ws_base;
        let (client, welcome) = join(base, &room, &format!("v{n}"), None).await;
        let mut seen = Seen::default();
        seen.take(&welcome);
        viewers.push((client, seen));
    }
    // Senders on all three at once.
    let senders: Vec<_> = instances
        .iter()
        .enumerate()
        .map(|(n, instance)| {
            tokio::spawn(send_all(
                instance.ws_base.clone(),
                room.clone(),
                format!("s{n}"),
                40,
            ))
        })
        .collect();
    let mut acked = HashSet::new();
    for sender in senders {
        acked.extend(sender.await.unwrap());
    }
    assert_eq!(acked.len(), 120);

    let watching: Vec<_> = viewers
        .into_iter()
        .map(|(mut client, mut seen)| {
            let wanted = acked.clone();
            tokio::spawn(async move {
                watch(&mut client, &mut seen, |s| s.has_all(&wanted)).await;
                // Anything more (a repeat) would arrive right behind.
                for frame in client.drain_for(Duration::from_millis(300)).await {
                    seen.take(&frame);
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for viewer in watching {
        seen.push(viewer.await.unwrap());
    }
    assert_exactly_once_in_order(&seen, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewers_of_a_killed_instance_resume_elsewhere_with_since_and_counts_settle() {
    let Some(bus) = cluster_bus() else { return };
    let store = TestStore::new("live");
    let mut instances: Vec<Option<Binary>> = (0..3).map(|_| Some(instance(&store, &bus))).collect();
    let live: Vec<&Binary> = instances.iter().flatten().collect();
    wait_until_connected(&live).await;
    let bases: Vec<String> = live.iter().map(|i| i.ws_base.clone()).collect();
    let room = new_room(live[0]).await;

    let mut viewers = Vec::new();
    for n in 0..12 {
        let (client, welcome) = join(&bases[n % 3], &room, &format!("v{n}"), None).await;
        let mut seen = Seen::default();
        seen.take(&welcome);
        viewers.push((n % 3, client, seen));
    }
    // Senders on the instances that stay, sending while the third dies.
    let senders: Vec<_> = (0..2)
        .map(|n| {
            let (base, room) = (bases[n].clone(), room.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for round in 0..6 {
                    acked.extend(
                        send_all(base.clone(), room.clone(), format!("s{n}r{round}"), 10).await,
                    );
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    instances[2].take().expect("running").kill9();

    // What the viewers must end with, once the senders are done.
    let wanted: Arc<Mutex<Option<HashSet<i64>>>> = Arc::default();
    let watching: Vec<_> = viewers
        .into_iter()
        .map(|(mut on, mut client, mut seen)| {
            let (bases, room, wanted) = (bases.clone(), room.clone(), wanted.clone());
            tokio::spawn(async move {
                let done = |s: &Seen| {
                    let wanted = wanted.lock().unwrap();
                    wanted.as_ref().is_some_and(|w| s.has_all(w))
                };
                while !watch(&mut client, &mut seen, done).await {
                    // Its instance died: resume on another (through the same address, in a
                    // deployment behind a proxy) after the last comment it saw.
                    on = (on + 1) % 2;
                    let since = seen.ids.last().copied().unwrap_or(0);
                    let (next, welcome) = join(&bases[on], &room, "again", Some(since)).await;
                    assert_eq!(welcome["recovered"], true, "{welcome}");
                    seen.take(&welcome);
                    client = next;
                }
                for frame in client.drain_for(Duration::from_millis(300)).await {
                    seen.take(&frame);
                }
                (client, seen)
            })
        })
        .collect();
    let mut acked = HashSet::new();
    for sender in senders {
        acked.extend(sender.await.unwrap());
    }
    assert_eq!(acked.len(), 120);
    *wanted.lock().unwrap() = Some(acked.clone());
    let mut seen = Vec::new();
    let mut clients = Vec::new();
    for viewer in watching {
        let (client, viewer) = viewer.await.unwrap();
        clients.push(client);
        seen.push(viewer);
    }
    assert_exactly_once_in_order(&seen, &acked);
    // The dead instance's viewers stopped counting: a newcomer is told the total of the 12
    // viewers (still connected) and itself, whichever instance it joins.
    for base in &bases[..2] {
        let url = format!("{base}/ws/live/{room}?name=counter");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut client = WsClient::connect(&url).await;
            let welcome = client.recv_type("welcome").await;
            if welcome["viewers"] == 13 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "counts did not settle: {welcome}"
            );
            drop(client);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn comments_sent_while_redis_is_down_are_stored_and_reach_everyone_once_it_is_back() {
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let bus = redis.bus_args();
    let store = TestStore::new("live");
    let (a, b) = (instance(&store, &bus), instance(&store, &bus));
    wait_until_connected(&[&a, &b]).await;
    let room = new_room(&a).await;
    let mut viewers = Vec::new();
    for (n, base) in [&a.ws_base, &b.ws_base, &a.ws_base, &b.ws_base]
        .iter()
        .enumerate()
    {
        let (client, welcome) = join(base, &room, &format!("v{n}"), None).await;
        let mut seen = Seen::default();
        seen.take(&welcome);
        viewers.push((client, seen));
    }
    let mut acked: HashSet<i64> = send_all(a.ws_base.clone(), room.clone(), "before".into(), 5)
        .await
        .into_iter()
        .collect();

    redis.stop();
    for instance in [&a, &b] {
        wait_for_json(
            &format!("{}/healthz", instance.base),
            "the bus reported lost",
            |health| health["status"] == "degraded" && health["bus"]["connected"] == false,
        )
        .await;
    }
    // Stored and acknowledged on A alone: the database is the record.
    acked.extend(send_all(a.ws_base.clone(), room.clone(), "during".into(), 5).await);

    redis.resume();
    wait_until_connected(&[&a, &b]).await;
    acked.extend(send_all(b.ws_base.clone(), room.clone(), "after".into(), 5).await);

    let mut seen = Vec::new();
    for (mut client, mut viewer) in viewers {
        let wanted = acked.clone();
        watch(&mut client, &mut viewer, |s| s.has_all(&wanted)).await;
        for frame in client.drain_for(Duration::from_millis(300)).await {
            viewer.take(&frame);
        }
        seen.push(viewer);
    }
    assert_eq!(acked.len(), 15);
    assert_exactly_once_in_order(&seen, &acked);
    let health = get_json(&format!("{}/healthz", b.base)).await;
    assert_eq!(health["status"], "ok", "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_bus_an_instance_reports_plain_health() {
    // The embedded default: no bus, no `bus` in the health answer.
    let store = TestStore::new("live");
    let alone = Binary::start(env!("CARGO_BIN_EXE_ws-stream"), &store, RELAXED);
    let health = timeout(
        Duration::from_secs(10),
        get_json(&format!("{}/healthz", alone.base)),
    )
    .await
    .expect("an answer");
    assert_eq!(health, json!({"status": "ok"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkin_hosted_on_one_instance_shows_live_on_the_others_and_attendance_on_the_host() {
    let Some(bus) = cluster_bus() else { return };
    let store = TestStore::new("live");
    let instances: Vec<Binary> = (0..3).map(|_| instance(&store, &bus)).collect();
    wait_until_connected(&instances.iter().collect::<Vec<_>>()).await;
    let (a, b, c) = (&instances[0], &instances[1], &instances[2]);
    let (room, token) = new_hosted_room(a).await;
    // The host's screen on A; students already in the room on B and C before it opens, so
    // their instances hold the room and hear of the check-in only through the bus.
    let mut host = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("{}/ws/live/{room}?name=teacher", a.ws_base)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut host = WsClient::from_stream(stream);
        assert_eq!(host.recv_type("welcome").await["host"], true);
        host
    };
    let (mut on_b, _) = join(&b.ws_base, &room, "bo", None).await;
    let (mut on_c, _) = join(&c.ws_base, &room, "cy", None).await;

    let opened = http()
        .post(format!("{}/api/rooms/{room}/checkins", a.base))
        .bearer_auth(&token)
        .json(&json!({"interval_secs": 60, "duration_secs": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 201);
    let checkin = opened.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let code = host.recv_type("checkin_code").await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    for student in [&mut on_b, &mut on_c] {
        let open = student.recv_type("checkin_open").await;
        assert_eq!(open["checkin"], checkin, "{open}");
    }

    // A wrong code on B is refused; the host's code checks in on B (WebSocket) and on C (HTTP).
    let wrong = if code == "000000" { "000001" } else { "000000" };
    on_b.send_json(&json!({"type": "checkin", "checkin": checkin, "code": wrong}))
        .await;
    assert_eq!(on_b.recv_type("error").await["code"], "wrong_code");
    on_b.send_json(&json!({"type": "checkin", "checkin": checkin, "code": code}))
        .await;
    assert_eq!(on_b.recv_type("checked_in").await["name"], "bo");
    let attended = http()
        .post(format!("{}/api/checkins/{checkin}/attend", c.base))
        .json(&json!({"name": "cy", "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(attended.status(), 200, "{:?}", attended.text().await);

    // Both appear live on the host's screen on A.
    let mut names = HashSet::new();
    while names.len() < 2 {
        let frame = host.recv_type("attendee").await;
        assert_eq!(frame["checkin"], checkin);
        names.insert(frame["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(names, HashSet::from(["bo".to_owned(), "cy".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clients_write_budget_is_the_clusters_not_each_instances() {
    let Some(bus) = cluster_bus() else { return };
    let store = TestStore::new("live");
    // 4 writes at once, then one every 10 s: each instance alone would take 4.
    let args = ["--rate-per-sec", "1", "--rate-burst", "4"];
    let instances: Vec<Binary> = (0..3).map(|_| instance_with(&store, &bus, &args)).collect();
    wait_until_connected(&instances.iter().collect::<Vec<_>>()).await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    // Making a room costs one write: 9 of them, three through each instance.
    for n in 0..9 {
        let response = http()
            .post(format!("{}/api/rooms", instances[n % 3].base))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    let made = statuses.iter().filter(|&&s| s == 201).count() as u64;
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(made as usize + refused, 9, "{statuses:?}");
    // The burst, and at most one more per second it took (per instance: all 9).
    assert!(
        made <= 4 + started.elapsed().as_secs() + 1,
        "{made} writes taken in {:?}: {statuses:?}",
        started.elapsed()
    );
    assert!(made >= 4, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_codes_are_counted_for_the_cluster_per_client_and_per_check_in() {
    let Some(bus) = cluster_bus() else { return };
    let store = TestStore::new("live");
    let mut args: Vec<&str> = RELAXED.to_vec();
    // 3 wrong codes per client, 6 per check-in (3 kept for clients' first guesses), and no
    // refill to speak of: each instance alone would take 3 and 6.
    args.extend([
        "--checkin-wrong-per-client",
        "3",
        "--checkin-wrong-burst",
        "6",
        "--checkin-wrong-per-min",
        "1",
    ]);
    let instances: Vec<Binary> = (0..3).map(|_| instance_with(&store, &bus, &args)).collect();
    wait_until_connected(&instances.iter().collect::<Vec<_>>()).await;
    let (room, token) = new_hosted_room(&instances[0]).await;
    let opened: Value = http()
        .post(format!("{}/api/rooms/{room}/checkins", instances[0].base))
        .bearer_auth(&token)
        .json(&json!({"interval_secs": 60, "duration_secs": 600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let checkin = opened["id"].as_i64().unwrap();
    let guess = |from: &'static str, on: usize, code: &'static str| {
        let url = format!("{}/api/checkins/{checkin}/attend", instances[on].base);
        async move {
            let response = http_from(from)
                .post(url)
                .json(&json!({"name": from, "code": code}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    // One client, three wrong codes through three instances: the third was its last anywhere.
    // A six-digit code of letters is never right, and is still compared (422 wrong_code).
    let mut answers = Vec::new();
    for on in 0..4 {
        answers.push(guess("127.0.0.7", on % 3, "000000").await);
    }
    let codes: Vec<&str> = answers.iter().map(|(_, code)| code.as_str()).collect();
    assert!(
        codes[..3]
            .iter()
            .all(|c| *c == "wrong_code" || *c == "checked_in"),
        "{answers:?}"
    );
    assert_eq!(codes[3], "too_many_attempts", "{answers:?}");
    // The check-in's budget (6, spent 3 so far) takes three more first guesses of other
    // clients, then refuses new clients on every instance.
    for (n, from) in ["127.0.0.8", "127.0.0.9", "127.0.0.10"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(guess(from, (n + 1) % 3, "000000").await.1, "wrong_code");
    }
    let (status, code) = guess("127.0.0.11", 1, "000000").await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_and_banned_words_made_on_one_instance_hold_on_the_others() {
    let Some(bus) = cluster_bus() else { return };
    let store = TestStore::new("live");
    let (a, b) = (instance(&store, &bus), instance(&store, &bus));
    wait_until_connected(&[&a, &b]).await;
    let (room, token) = new_hosted_room(&a).await;
    let (mut on_b, _) = join(&b.ws_base, &room, "bo", None).await;
    let said = send_all(a.ws_base.clone(), room.clone(), "al".into(), 3).await;
    // B has the room's newest comments in memory now (its viewer joined and was pushed them).
    let mut seen = Seen::default();
    let wanted: HashSet<i64> = said.iter().copied().collect();
    assert!(watch(&mut on_b, &mut seen, |s| s.has_all(&wanted)).await);

    let deleted = http()
        .delete(format!("{}/api/rooms/{room}/danmaku/{}", a.base, said[1]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(on_b.recv_type("deleted").await["ids"], json!([said[1]]));
    // B's history and a join on B leave it out.
    let page = get_json(&format!("{}/api/rooms/{room}/history?after=0", b.base)).await;
    assert_eq!(ids(&page["items"]), [said[0], said[2]]);
    let (_late, welcome) = join(&b.ws_base, &room, "late", None).await;
    assert_eq!(ids(&welcome["history"]), [said[0], said[2]]);

    // A word banned through A is refused on B within the rules' cache time (1 s).
    let banned = http()
        .put(format!("{}/api/rooms/{room}/banned-words", a.base))
        .bearer_auth(&token)
        .json(&json!({"words": ["forbidden"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(banned.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        on_b.send_json(&json!({"type": "send", "text": "FORBIDDEN", "ref": "f"}))
            .await;
        let answer = loop {
            let frame = on_b.recv_json().await;
            if frame["ref"] == "f" {
                break frame;
            }
        };
        if answer["type"] == "error" {
            assert_eq!(answer["code"], "banned_word", "{answer}");
            break;
        }
        assert!(Instant::now() < deadline, "B never refused the banned word");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
