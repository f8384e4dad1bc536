//! Guessing check-in codes, the way an attacker would: a flood from one address over many
//! connections under fresh names, wrong codes typed under a classmate's name from elsewhere,
//! and a flood from many addresses against the check-in-wide budget of wrong codes.

mod helpers;

use std::time::{Duration, Instant};

use helpers::{RELAXED, http, http_from, join_from, join_host, spawn_app, try_connect_from};
use serde_json::{Value, json};
use service_kit::testing::{TestService, WsClient};

/// Valid codes at any moment (the current and the one before it) out of 10^6.
const VALID_CODE_ODDS: f64 = 2.0 / 1_000_000.0;

/// Creates a room and opens a check-in whose code stays the same for the test (a 60 s
/// interval); the room, its host token and the check-in id.
async fn room_with_checkin(app: &TestService) -> (String, String, i64) {
    let created: Value = http()
        .post(format!("{}/api/rooms", app.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room = created["room"].as_str().unwrap().to_owned();
    let token = created["host_token"].as_str().unwrap().to_owned();
    let opened = http()
        .post(format!("{}/api/rooms/{room}/checkins", app.base))
        .bearer_auth(&token)
        .json(&json!({"interval_secs": 60, "duration_secs": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 201);
    let id = opened.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    (room, token, id)
}

/// Sends a `checkin` frame and waits for its answer (`checked_in` or `error`).
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

/// A code that is not `code` (to guess wrong on purpose).
fn not(code: &str, n: u32) -> String {
    let guess = format!("{:06}", n % 1_000_000);
    if guess == code {
        format!("{:06}", (n + 1) % 1_000_000)
    } else {
        guess
    }
}

/// One guess of the flood: when its answer came (since the flood began), and whether the code
/// was compared (`wrong_code` or `checked_in`) rather than refused unseen.
struct Answer {
    at: Duration,
    compared: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guessing_flood_from_one_address_gets_nowhere_near_a_code() {
    // The defaults: what a deployment gets.
    let app = spawn_app(&[]);
    let (room, _token, id) = room_with_checkin(&app).await;
    const CONNECTIONS: usize = 8;
    const GUESSES_PER_CONNECTION: u32 = 25;
    let flood = Duration::from_secs(4);
    let started = Instant::now();

    // Each worker opens connection after connection under fresh names and fires guesses as
    // fast as the answers come back, all from 127.0.0.1.
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|worker| {
            let (ws_base, room) = (app.ws_base.clone(), room.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut attempts = 0u32;
                let mut n = 0u32;
                while started.elapsed() < flood {
                    n += 1;
                    let name = format!("g{worker}x{n}");
                    let url = format!("{ws_base}/ws/live/{room}?name={name}");
                    attempts += 1;
                    let Ok(mut client) =
                        try_connect_from("127.0.0.1".parse().unwrap(), &url, &[]).await
                    else {
                        continue; // refused before the upgrade: no guess at all
                    };
                    client.recv_type("welcome").await;
                    // Pipelined: every guess of this connection at once, then the answers.
                    for g in 0..GUESSES_PER_CONNECTION {
                        let code =
                            format!("{:06}", (worker as u32 * 100_000 + n * 100 + g) % 1_000_000);
                        client
                            .send_json(&json!({"type": "checkin", "checkin": id, "code": code}))
                            .await;
                    }
                    let mut answered = 0;
                    while answered < GUESSES_PER_CONNECTION {
                        let frame = client.recv_json().await;
                        if frame["type"] != "error" && frame["type"] != "checked_in" {
                            continue;
                        }
                        answered += 1;
                        let compared =
                            frame["type"] == "checked_in" || frame["code"] == "wrong_code";
                        answers.push(Answer {
                            at: started.elapsed(),
                            compared,
                        });
                    }
                }
                (answers, attempts)
            })
        })
        .collect();
    let mut answers = Vec::new();
    let mut connections = 0;
    for worker in workers {
        let (mine, attempts) = worker.await.unwrap();
        answers.extend(mine);
        connections += attempts;
    }
    let elapsed = started.elapsed();
    let half = elapsed / 2;
    let compared = answers.iter().filter(|a| a.compared).count();
    let compared_late = answers
        .iter()
        .filter(|a| a.compared && a.at >= half)
        .count();
    // What got compared in the second half is the rate a longer flood keeps up (the first half
    // also holds the bursts); over a 10-minute check-in that is:
    let late_rate = compared_late as f64 / (elapsed - half).as_secs_f64();
    let ten_minutes = 600.0;
    let expected_compared = compared as f64 + late_rate * (ten_minutes - elapsed.as_secs_f64());
    let odds = 1.0 - (1.0 - VALID_CODE_ODDS).powf(expected_compared);
    eprintln!(
        "flood: {} guesses over {connections} connections in {elapsed:?}; {compared} compared \
         ({compared_late} in the second half, {late_rate:.1}/s): {expected_compared:.0} in 10 \
         minutes, odds of hitting a code {:.4}%",
        answers.len(),
        odds * 100.0
    );
    assert!(
        answers.len() >= 200,
        "the flood was a flood: {} guesses",
        answers.len()
    );
    assert!(
        odds < 0.001,
        "a 10-minute check-in falls to one address with odds {:.2}% ({expected_compared:.0} \
         guesses compared)",
        odds * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_student_whose_name_was_attacked_still_checks_in_with_the_right_code() {
    let app = spawn_app(&[]);
    let (room, token, id) = room_with_checkin(&app).await;
    let (mut host, _) = join_host(&app, &room, &token, "name=teacher").await;
    let code = host.recv_type("checkin_code").await["code"]
        .as_str()
        .unwrap()
        .to_owned();

    // From another address, wrong codes under zoe's name, over WebSocket and HTTP, until that
    // address is refused.
    let (mut mallory, _) = join_from(&app, "127.0.0.2", &room, "name=zoe").await;
    let mut answers = Vec::new();
    for n in 0..12 {
        answers.push(check_in(&mut mallory, id, &not(&code, n)).await["code"].clone());
    }
    let over_http = http_from("127.0.0.2")
        .post(format!("{}/api/checkins/{id}/attend", app.base))
        .json(&json!({"name": "zoe", "code": not(&code, 99)}))
        .send()
        .await
        .unwrap();
    assert_eq!(over_http.status(), 429);
    // The address spent its budget (10 guesses in a burst) and its 10 wrong codes: refused.
    assert_eq!(answers[0], "wrong_code", "{answers:?}");
    assert!(
        answers[10..]
            .iter()
            .all(|a| a == "too_many_attempts" || a == "rate_limited"),
        "{answers:?}"
    );

    // Zoe herself, from her own address, with the code on the host's screen.
    let (mut zoe, _) = join_from(&app, "127.0.0.1", &room, "name=zoe").await;
    let answer = check_in(&mut zoe, id, &code).await;
    assert_eq!(
        answer,
        json!({"type": "checked_in", "checkin": id, "name": "zoe"}),
        "{answer}"
    );
    let attendee = host.recv_type("attendee").await;
    assert_eq!(attendee["name"], "zoe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_from_many_addresses_spend_the_check_ins_budget_and_then_wait() {
    // A small check-in-wide budget: 20 wrong codes, then one every 10 s; 10 per address.
    let mut args = RELAXED.to_vec();
    args.extend([
        "--checkin-wrong-burst",
        "20",
        "--checkin-wrong-per-min",
        "6",
        "--checkin-wrong-per-client",
        "10",
    ]);
    let app = spawn_app(&args);
    let (room, token, id) = room_with_checkin(&app).await;
    let (mut host, _) = join_host(&app, &room, &token, "name=teacher").await;
    let code = host.recv_type("checkin_code").await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut compared = 0;
    let mut waited = 0;

    // A few addresses that keep guessing: together they spend only half the budget (the rest
    // is kept for first tries), then wait.
    let mut guessers = Vec::new();
    for k in 1..=3 {
        let (client, _) = join_from(&app, &format!("127.0.1.{k}"), &room, "name=x").await;
        guessers.push(client);
    }
    for (k, guesser) in guessers.iter_mut().enumerate() {
        for n in 0..10 {
            let answer = check_in(guesser, id, &not(&code, k as u32 * 10 + n)).await;
            match answer["code"].as_str() {
                Some("wrong_code") => compared += 1,
                Some("rate_limited") => {
                    waited += 1;
                    assert!(
                        answer["message"].as_str().unwrap().contains("try again in"),
                        "{answer}"
                    );
                }
                _ => panic!("{answer}"),
            }
        }
    }
    assert!(compared <= 13, "{compared} wrong codes compared");
    assert!(waited >= 17, "{waited} guesses made to wait");

    // A student's first try still works while the guessers wait.
    let (mut ann, _) = join_from(&app, "127.0.0.5", &room, "name=ann").await;
    assert_eq!(check_in(&mut ann, id, &code).await["type"], "checked_in");

    // Ever new addresses reach the reserve too; past it everyone waits, a right code as well
    // (it cannot be told from a wrong one without comparing it), over HTTP with a Retry-After.
    for k in 1..=20 {
        let (mut client, _) = join_from(&app, &format!("127.0.2.{k}"), &room, "name=y").await;
        match check_in(&mut client, id, &not(&code, 500 + k)).await["code"].as_str() {
            Some("wrong_code") => compared += 1,
            Some("rate_limited") => waited += 1,
            other => panic!("{other:?}"),
        }
    }
    // 20 in the burst, and at most one earned back (one per 10 s) while the test runs.
    assert!(compared <= 21, "{compared} wrong codes compared in all");
    assert!(waited >= 17 + 10, "{waited} guesses made to wait in all");
    let refused = http_from("127.0.0.6")
        .post(format!("{}/api/checkins/{id}/attend", app.base))
        .json(&json!({"name": "bob", "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&wait), "Retry-After {wait}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");

    // The host still sees who checked in.
    let results: Value = http()
        .get(format!("{}/api/checkins/{id}", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(results["attendees"][0]["name"], "ann");
    assert_eq!(host.recv_type("attendee").await["name"], "ann");
}
