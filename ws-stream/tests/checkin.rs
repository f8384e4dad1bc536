//! The classroom check-in end to end: host-only calls, codes that rotate on the host's screen
//! and never reach a viewer, the current and previous code accepted, wrong-code limits, results
//! as JSON and CSV, closing, and a restart in the middle.

mod helpers;

use std::time::Duration;

use helpers::{RELAXED, http, join, join_from, join_host, spawn_app};
use serde_json::{Value, json};
use service_kit::testing::{TestService, WsClient};

/// Creates a room; its id and host token.
async fn create_room(app: &TestService) -> (String, String) {
    let response = http()
        .post(format!("{}/api/rooms", app.base))
        .json(&json!({"title": "Physics 101"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["title"], "Physics 101");
    (
        body["room"].as_str().unwrap().to_owned(),
        body["host_token"].as_str().unwrap().to_owned(),
    )
}

/// Opens a check-in as the host; the response.
async fn open_checkin(
    app: &TestService,
    room: &str,
    token: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = http()
        .post(format!("{}/api/rooms/{room}/checkins", app.base))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// Checks in over WebSocket; the answer frame (`checked_in` or `error`).
async fn check_in(client: &mut WsClient, checkin: i64, code: &str) -> Value {
    client
        .send_json(&json!({"type": "checkin", "checkin": checkin, "code": code, "ref": code}))
        .await;
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "checked_in" || frame["type"] == "error" {
            return frame;
        }
    }
}

/// The host's connection, keeping every frame it skipped while waiting for another kind.
struct Host {
    client: WsClient,
    seen: Vec<Value>,
}

impl Host {
    /// The next frame of type `kind`, logging the others.
    async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.client.recv_json().await;
            self.seen.push(frame.clone());
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// The names in every `attendee` frame seen so far and arriving within `wait`.
    async fn attendees(&mut self, wait: Duration) -> Vec<String> {
        let more = self.client.drain_for(wait).await;
        self.seen.extend(more);
        self.seen
            .iter()
            .filter(|f| f["type"] == "attendee")
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Every frame a viewer got, checked for check-in codes: a viewer must never see one.
fn assert_no_code(frames: &[Value], codes: &[String]) {
    for frame in frames {
        assert_ne!(
            frame["type"], "checkin_code",
            "a viewer got a code: {frame}"
        );
        let text = frame.to_string();
        for code in codes {
            assert!(
                !text.contains(code.as_str()),
                "a viewer's frame holds code {code}: {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_from_start_to_attendance_list() {
    let app = spawn_app(RELAXED);
    let (room, token) = create_room(&app).await;
    let (host, welcome) = join_host(&app, &room, &token, "name=host").await;
    assert_eq!(welcome["host"], true);
    let mut host = Host {
        client: host,
        seen: Vec::new(),
    };
    let (mut alice, _) = join(&app, &room, "name=alice").await;
    let (mut bob, _) = join(&app, &room, "name=bob").await;
    let (mut dave, _) = join(&app, &room, "name=dave").await;

    // Host-only calls from a viewer: no token 401, a wrong token 403.
    let settings = json!({"interval_secs": 2, "duration_secs": 60});
    assert_eq!(
        open_checkin(&app, &room, None, settings.clone())
            .await
            .status(),
        401
    );
    assert_eq!(
        open_checkin(&app, &room, Some("guess"), settings.clone())
            .await
            .status(),
        403
    );
    let (other_room, other_token) = create_room(&app).await;
    assert_ne!(other_room, room);
    assert_eq!(
        open_checkin(&app, &room, Some(&other_token), settings.clone())
            .await
            .status(),
        403
    );
    for bad in [
        json!({"interval_secs": 1, "duration_secs": 60}),
        json!({"interval_secs": 2, "duration_secs": 3601}),
    ] {
        let response = open_checkin(&app, &room, Some(&token), bad).await;
        assert_eq!(response.status(), 422);
    }

    let response = open_checkin(&app, &room, Some(&token), settings.clone()).await;
    assert_eq!(response.status(), 201);
    let opened: Value = response.json().await.unwrap();
    let id = opened["id"].as_i64().unwrap();
    assert_eq!(
        open_checkin(&app, &room, Some(&token), settings)
            .await
            .status(),
        409,
        "one check-in at a time"
    );

    // The host sees the codes rotate.
    assert_eq!(host.recv_type("checkin_open").await["checkin"], id);
    let mut codes = vec![
        host.recv_type("checkin_code").await["code"]
            .as_str()
            .unwrap()
            .to_owned(),
    ];
    for _ in 0..2 {
        let frame = host.recv_type("checkin_code").await;
        assert_eq!(frame["checkin"], id);
        let code = frame["code"].as_str().unwrap().to_owned();
        assert_eq!(code.len(), 6);
        assert_ne!(&code, codes.last().unwrap(), "a fresh code every interval");
        codes.push(code);
    }
    let (oldest, previous, current) = (&codes[0], &codes[1], &codes[2]);

    // The current code and the one before it are accepted; an older one is not.
    let answer = check_in(&mut alice, id, current).await;
    assert_eq!(
        answer,
        json!({"type": "checked_in", "checkin": id, "name": "alice"})
    );
    assert_eq!(check_in(&mut bob, id, previous).await["type"], "checked_in");
    if oldest != current && oldest != previous {
        let refused = check_in(&mut dave, id, oldest).await;
        assert_eq!(refused["code"], "wrong_code", "{refused}");
        assert_eq!(refused["ref"], oldest.as_str());
    }
    // Checking in twice is harmless.
    assert_eq!(
        check_in(&mut alice, id, current).await["type"],
        "checked_in"
    );

    // Ten wrong codes from one address (the default limit), then even the right one from it is
    // refused, whatever the name.
    let (mut eve, _) = join_from(&app, "127.0.0.3", &room, "name=eve").await;
    for n in 0..10 {
        let refused = check_in(&mut eve, id, &format!("x{n}")).await;
        assert_eq!(refused["code"], "wrong_code", "attempt {n}: {refused}");
    }
    let latest = host.recv_type("checkin_code").await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        check_in(&mut eve, id, &latest).await["code"],
        "too_many_attempts"
    );
    let (mut eves_other_tab, _) = join_from(&app, "127.0.0.3", &room, "name=fay").await;
    assert_eq!(
        check_in(&mut eves_other_tab, id, &latest).await["code"],
        "too_many_attempts",
        "the limit is the address's, not the name's"
    );

    // Over HTTP too, with the latest code.
    let response = http()
        .post(format!("{}/api/checkins/{id}/attend", app.base))
        .json(&json!({"name": "=frank", "code": latest}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    // The host saw each attendee once, as they came.
    let attendees = host.attendees(Duration::from_millis(500)).await;
    assert_eq!(attendees, ["alice", "bob", "=frank"]);

    // Results for the host only.
    let url = format!("{}/api/checkins/{id}", app.base);
    assert_eq!(http().get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        http()
            .get(&url)
            .bearer_auth(&other_token)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let results: Value = http()
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = results["attendees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "=frank"]);
    assert_eq!(results["room"], room.as_str());
    let csv = http()
        .get(format!("{url}.csv"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "name,checked_in_at");
    assert!(lines[1].starts_with("alice,20"), "{csv}");
    assert!(lines[2].starts_with("bob,"), "{csv}");
    assert!(
        lines[3].starts_with("'=frank,"),
        "formulas are defused: {csv}"
    );
    assert_eq!(lines.len(), 4);
    assert_eq!(
        http()
            .get(format!("{url}.csv"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Viewers were told a check-in is open, and never saw a code.
    let mut all_codes = codes.clone();
    all_codes.push(latest);
    // (Watched for longer than an interval, all at once, so a rotation happens meanwhile.)
    let watched = futures::future::join_all(
        [&mut alice, &mut bob, &mut dave, &mut eve]
            .map(|viewer| viewer.drain_for(Duration::from_millis(2500))),
    )
    .await;
    for frames in watched {
        assert_no_code(&frames, &all_codes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_closes_on_time_tells_the_room_and_survives_a_restart() {
    let mut app = spawn_app(RELAXED);
    let (room, token) = create_room(&app).await;
    let response = open_checkin(
        &app,
        &room,
        Some(&token),
        json!({"interval_secs": 3, "duration_secs": 10}),
    )
    .await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let (mut host, _) = join_host(&app, &room, &token, "").await;
    let code = host.recv_type("checkin_code").await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut alice, _) = join(&app, &room, "name=alice").await;
    assert_eq!(
        alice.recv_type("checkin_open").await["checkin"],
        id,
        "a late viewer is told too"
    );
    assert_eq!(check_in(&mut alice, id, &code).await["type"], "checked_in");
    drop((host, alice));

    // A restart in the middle: the check-in and its attendance are on disk; codes resume.
    app.restart(RELAXED);
    let (mut host, _) = join_host(&app, &room, &token, "").await;
    assert_eq!(host.recv_type("checkin_open").await["checkin"], id);
    let code = host.recv_type("checkin_code").await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut bob, _) = join(&app, &room, "name=bob").await;
    assert_eq!(check_in(&mut bob, id, &code).await["type"], "checked_in");

    // It closes on time: everyone is told how many attended, and it takes no more.
    let closed = host.recv_type("checkin_closed").await;
    assert_eq!(
        closed,
        json!({"type": "checkin_closed", "checkin": id, "attended": 2})
    );
    assert_eq!(bob.recv_type("checkin_closed").await["attended"], 2);
    let (mut late, _) = join(&app, &room, "name=late").await;
    assert_eq!(
        check_in(&mut late, id, &code).await["code"],
        "checkin_closed"
    );
    let results: Value = http()
        .get(format!("{}/api/checkins/{id}", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(results["closed"], true);
    assert_eq!(results["attendees"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_opening_at_once_get_one_check_in_and_the_rest_a_conflict() {
    let app = spawn_app(RELAXED);
    let (room, token) = create_room(&app).await;
    let body = json!({"interval_secs": 5, "duration_secs": 60});
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let (base_room, token, body) = (room.clone(), token.clone(), body.clone());
            let app_base = app.base.clone();
            tokio::spawn(async move {
                http()
                    .post(format!("{app_base}/api/rooms/{base_room}/checkins"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    // And the room keeps exactly that one: a later open is still a conflict.
    let again = open_checkin(&app, &room, Some(&token), body).await;
    assert_eq!(again.status(), 409);
}

#[tokio::test]
async fn a_checkin_frame_counts_only_in_its_own_room() {
    let app = spawn_app(RELAXED);
    let (room, token) = create_room(&app).await;
    let (mut host, _) = join_host(&app, &room, &token, "name=host").await;
    // A long interval: the code on the host's screen stays the same for the whole test.
    let opened = open_checkin(
        &app,
        &room,
        Some(&token),
        json!({"interval_secs": 60, "duration_secs": 120}),
    )
    .await;
    assert_eq!(opened.status(), 201);
    let id = opened.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let code = host.recv_type("checkin_code").await["code"]
        .as_str()
        .unwrap()
        .to_owned();

    // The right code from a connection in another room is refused as if there were no such
    // check-in, and costs the name nothing.
    let (mut outsider, _) = join(&app, "elsewhere", "name=mallory").await;
    let refused = check_in(&mut outsider, id, &code).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "not_found", "{refused}");

    let (mut student, _) = join(&app, &room, "name=mallory").await;
    let answer = check_in(&mut student, id, &code).await;
    assert_eq!(answer["type"], "checked_in", "{answer}");
}
