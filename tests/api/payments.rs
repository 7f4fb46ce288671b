//! Payments through Stripe, against a fake Stripe that is a real HTTP
//! server, with events signed the way Stripe signs them (and that signature
//! checked against Stripe's own Python library): one paid Checkout is one
//! grant however often its event arrives; forged, stale, foreign and
//! mismatched events change nothing; refunds take back exactly what is
//! left; a plan renews per period; auto top-up fires once per crossing.

use crate::fake_stripe::{self, FakeStripe, WEBHOOK_SECRET, WEBHOOK_SECRET_OLD, event, now_s, signed};
use crate::helpers::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const WEBHOOK: &str = "/v1/payments/stripe/webhook";
const SHOP: &str = "https://shop.example/billing";

fn payments_app(stripe: &FakeStripe) -> TestApp {
    payments_app_with(stripe, |_| {})
}

pub(crate) fn payments_app_with(stripe: &FakeStripe, adjust: impl FnOnce(&mut tollgate::config::Config)) -> TestApp {
    let base = stripe.base.clone();
    TestApp::spawn_with_secrets(
        &[
            ("STRIPE_SECRET_KEY", fake_stripe::SECRET_KEY),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("STRIPE_WEBHOOK_SECRET_PREVIOUS", WEBHOOK_SECRET_OLD),
        ],
        move |c| {
            let p = &mut c.payments;
            p.provider = "stripe".into();
            p.stripe_api_base = base;
            p.return_urls = vec![SHOP.into()];
            p.auto_topup_poll_ms = 100;
            p.packages = vec![tollgate::config::PackageConfig {
                id: "p500".into(),
                credits: 500,
                price: 500,
                currency: "usd".into(),
                category: "paid".into(),
                priority: None,
                expires_days: Some(365),
                name: Some("500 credits".into()),
            }];
            p.plans = vec![tollgate::config::PlanConfig {
                id: "pro".into(),
                credits_per_period: 1000,
                price: 2000,
                currency: "usd".into(),
                interval: "month".into(),
                rollover: false,
                priority: None,
                name: None,
            }];
            adjust(c);
        },
    )
}

pub(crate) fn send(app: &TestApp, e: &Value, secret: &str) -> Resp {
    let (body, header) = signed(e, secret, now_s());
    send_raw(app, &body, &header)
}

fn send_raw(app: &TestApp, body: &str, header: &str) -> Resp {
    app.client
        .request(
            "POST",
            WEBHOOK,
            None,
            &[("Stripe-Signature", header), ("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
        .expect("POST")
}

/// A Checkout for `item` as `token`: the payment and Stripe's session id.
fn checkout(app: &TestApp, token: &str, item: Value) -> (String, String) {
    let mut body = json!({"success_url": format!("{SHOP}/done"), "cancel_url": format!("{SHOP}/cancel")});
    body.as_object_mut().unwrap().extend(item.as_object().unwrap().clone());
    let r = app.client.post("/v1/payments/checkout", token, body);
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let session = v["url"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    (v["payment"]["id"].as_str().unwrap().to_owned(), session)
}

/// The `checkout.session.completed` Stripe sends for a paid package.
pub(crate) fn completed(session: &str, payment: &str, user: &str, amount: i64) -> Value {
    json!({"id": session, "object": "checkout.session", "mode": "payment", "payment_status": "paid", "status": "complete",
           "client_reference_id": user, "metadata": {"payment_id": payment, "user_id": user},
           "amount_total": amount, "currency": "usd", "customer": "cus_ann", "payment_intent": format!("pi_{session}")})
}

fn grants_from_payments(app: &TestApp) -> i64 {
    app.count_where("credit_grants", "source = 'payment'")
}

#[test]
fn one_paid_checkout_is_one_grant_even_when_its_event_arrives_fifty_times_at_once() {
    let stripe = FakeStripe::start();
    let app = payments_app(&stripe);
    let ann = app.user("ann");
    let catalog = app.client.get("/v1/payments/catalog", &ann.token).json();
    assert_eq!(
        (catalog["packages"][0]["id"].as_str(), catalog["plans"][0]["interval"].as_str()),
        (Some("p500"), Some("month"))
    );

    let (payment, session) = checkout(&app, &ann.token, json!({"package": "p500"}));
    let sent = &stripe.requests()[0];
    assert_eq!(sent.path, "/v1/checkout/sessions");
    assert_eq!(sent.authorization.as_deref(), Some("Bearer sk_test_tollgate"));
    assert_eq!(sent.idempotency_key.as_deref(), Some(format!("tollgate-checkout-{payment}").as_str()));
    let f = |k: &str| sent.form.get(k).cloned().unwrap_or_default();
    assert_eq!(
        (f("mode"), f("client_reference_id"), f("line_items[0][price_data][unit_amount]"), f("metadata[payment_id]")),
        ("payment".into(), ann.id.clone(), "500".into(), payment.clone())
    );
    assert_eq!(app.balance(&ann)["balance"], 0, "nothing is granted before Stripe says it was paid");
    let listed = app.client.get("/v1/payments", &ann.token).json();
    assert_eq!(
        (listed["data"][0]["status"].as_str(), listed["data"][0]["amount_minor"].as_i64()),
        (Some("pending"), Some(500))
    );

    // Stripe delivers the event; its retries and a duplicate race in.
    let e = event("evt_paid_1", "checkout.session.completed", completed(&session, &payment, &ann.id, 500));
    let (body, header) = signed(&e, WEBHOOK_SECRET, now_s());
    let (body, header) = (Arc::new(body), Arc::new(header));
    let outcomes: Vec<String> = (0..50)
        .map(|_| {
            let (client, body, header) = (app.client.clone(), Arc::clone(&body), Arc::clone(&header));
            std::thread::spawn(move || {
                let r = client
                    .request("POST", WEBHOOK, None, &[("Stripe-Signature", header.as_str())], Some(body.as_bytes()))
                    .unwrap();
                assert_eq!(r.status, 200, "{}", r.text());
                r.json()["outcome"].as_str().unwrap().to_owned()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(outcomes.iter().filter(|o| *o == "granted").count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "duplicate").count(), 49);
    // The same payment in another event (Stripe's async success) is no second grant either.
    let again =
        event("evt_paid_2", "checkout.session.async_payment_succeeded", completed(&session, &payment, &ann.id, 500));
    assert_eq!(send(&app, &again, WEBHOOK_SECRET).json()["outcome"], "duplicate");

    assert_eq!(app.balance(&ann)["balance"], 500);
    assert_eq!(grants_from_payments(&app), 1);
    let g = &app.client.get("/v1/credits/grants", &ann.token).json()["data"][0];
    assert_eq!(
        (g["source"].as_str(), g["category"].as_str(), g["external_id"].as_str()),
        (Some("payment"), Some("paid"), Some(session.as_str()))
    );
    assert!(g["expires_at"].is_string(), "the package's 365 days: {g}");
    let p = &app.client.get("/v1/payments", &ann.token).json()["data"][0];
    assert_eq!((p["status"].as_str(), p["grant_id"].as_str()), (Some("paid"), g["id"].as_str()));
    assert_eq!(app.count_where("events", "type = 'payment.succeeded'"), 1);
    assert_eq!(app.count("payment_events"), 2);
    assert_eq!(app.audit()["valid"], true);
}

#[test]
fn forged_stale_foreign_and_mismatched_events_change_nothing() {
    let stripe = FakeStripe::start();
    let app = payments_app(&stripe);
    let (ann, bob) = (app.user("ann"), app.user("bob"));
    let (payment, session) = checkout(&app, &ann.token, json!({"package": "p500"}));
    let paid = |id: &str, amount: i64, user: &str| {
        event(id, "checkout.session.completed", completed(&session, &payment, user, amount))
    };
    let refused = |r: Resp, why: &str| {
        assert_eq!((r.status, r.error_code().as_str()), (400, "webhook_signature_invalid"), "{why}: {}", r.text());
    };
    // No signature, another secret, too old, a body changed after signing.
    let e = paid("evt_1", 500, &ann.id);
    refused(send_raw(&app, &e.to_string(), ""), "unsigned");
    refused(send(&app, &e, "whsec_attacker"), "another secret");
    let (body, header) = signed(&e, WEBHOOK_SECRET, now_s() - 301);
    refused(send_raw(&app, &body, &header), "older than the tolerance");
    let (body, header) = signed(&e, WEBHOOK_SECRET, now_s());
    refused(send_raw(&app, &body.replace("500", "50000"), &header), "re-priced after signing");
    assert_eq!(app.count("payment_events"), 0, "an unverified body is stored nowhere");

    // Verified but wrong: recorded, logged, nothing granted.
    let r = send(&app, &paid("evt_2", 100, &ann.id), WEBHOOK_SECRET);
    assert_eq!(r.json()["outcome"], "amount_mismatch", "{}", r.text());
    let r = send(&app, &paid("evt_3", 500, &bob.id), WEBHOOK_SECRET);
    assert_eq!(r.json()["outcome"], "other_account");
    let stranger = completed("cs_unknown", "pay_999", &ann.id, 500);
    let r = send(&app, &event("evt_4", "checkout.session.completed", stranger), WEBHOOK_SECRET);
    assert_eq!(r.json()["outcome"], "unknown_object");
    let mut unpaid = completed(&session, &payment, &ann.id, 500);
    unpaid["payment_status"] = json!("unpaid");
    assert_eq!(
        send(&app, &event("evt_5", "checkout.session.completed", unpaid), WEBHOOK_SECRET).json()["outcome"],
        "not_paid"
    );
    assert_eq!(
        send(&app, &event("evt_6", "customer.created", json!({"id": "cus_1"})), WEBHOOK_SECRET).json()["outcome"],
        "ignored"
    );
    assert_eq!(grants_from_payments(&app), 0);
    assert_eq!((app.balance(&ann)["balance"].as_i64(), app.balance(&bob)["balance"].as_i64()), (Some(0), Some(0)));
    let logs = app.client.get("/v1/admin/logs?log_type=system&level=error", &app.admin).json().to_string();
    assert!(logs.contains("amount_mismatch") && logs.contains("paid 100 usd for p500 sold at 500 usd"), "{logs}");
    assert!(logs.contains("other_account"), "{logs}");
    assert_eq!(app.count("payment_events"), 5, "each verified event recorded once");
    let metrics = app.client.request("GET", "/metrics", None, &[], None).unwrap().text();
    for line in [
        "tollgate_payment_events_total{outcome=\"bad_signature\"} 4",
        "tollgate_payment_events_total{outcome=\"amount_mismatch\"} 1",
        "tollgate_payment_events_total{outcome=\"other_account\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // Our own rotation: the previous secret still verifies.
    let (payment2, session2) = checkout(&app, &ann.token, json!({"package": "p500"}));
    let e = event("evt_7", "checkout.session.completed", completed(&session2, &payment2, &ann.id, 500));
    assert_eq!(send(&app, &e, WEBHOOK_SECRET_OLD).json()["outcome"], "granted");
    assert_eq!(app.audit()["valid"], true);

    // Checkout's own refusals, before Stripe is asked.
    let before = stripe.requests().len();
    for (body, param) in [
        (json!({"package": "p500", "success_url": "https://evil.example/", "cancel_url": SHOP}), "success_url"),
        (json!({"package": "p500", "success_url": SHOP, "cancel_url": "https://shop.example.evil.com/"}), "cancel_url"),
        (json!({"package": "nope", "success_url": SHOP, "cancel_url": SHOP}), "package"),
        (json!({"package": "p500", "plan": "pro", "success_url": SHOP, "cancel_url": SHOP}), "package"),
        (json!({"success_url": SHOP, "cancel_url": SHOP}), "package"),
    ] {
        let r = app.client.post("/v1/payments/checkout", &ann.token, body.clone());
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some(param)), "{body}: {}", r.text());
    }
    assert_eq!(stripe.requests().len(), before);
    // Stripe down: a clear 502 and a failed payment, no grant.
    stripe.fail_with(Some(500));
    let r = app.client.post(
        "/v1/payments/checkout",
        &ann.token,
        json!({"package": "p500", "success_url": SHOP, "cancel_url": SHOP}),
    );
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(app.client.get("/v1/payments", &ann.token).json()["data"][0]["status"], "failed");
}

fn refund(session: &str, id: &str, refunded: i64) -> Value {
    event(
        id,
        "charge.refunded",
        json!({"id": format!("ch_{session}"), "object": "charge", "payment_intent": format!("pi_{session}"),
               "amount": 500, "amount_refunded": refunded, "currency": "usd", "refunded": refunded == 500}),
    )
}

#[test]
fn a_refund_after_partial_spending_takes_back_what_is_left_and_records_the_shortfall() {
    let stripe = FakeStripe::start();
    let app = payments_app(&stripe);
    let ann = app.user("ann");
    let (payment, session) = checkout(&app, &ann.token, json!({"package": "p500"}));
    send(
        &app,
        &event("evt_paid", "checkout.session.completed", completed(&session, &payment, &ann.id, 500)),
        WEBHOOK_SECRET,
    );
    assert_eq!(app.client.consume(&ann.token, 200).status, 201);

    // Half refunded: 250 credits owed back, 300 left: all 250 taken.
    let r = send(&app, &refund(&session, "evt_r1", 250), WEBHOOK_SECRET);
    assert_eq!(r.json()["outcome"], "refunded", "{}", r.text());
    assert_eq!(app.balance(&ann)["balance"], 50);
    // The same refund again (another event id): nothing more.
    assert_eq!(send(&app, &refund(&session, "evt_r1b", 250), WEBHOOK_SECRET).json()["outcome"], "duplicate");
    // Then the rest: 250 more owed, 50 left: 50 taken, 200 short.
    send(&app, &refund(&session, "evt_r2", 500), WEBHOOK_SECRET);
    assert_eq!(app.balance(&ann)["balance"], 0, "never below zero");
    let p = &app.client.get("/v1/admin/payments", &app.admin).json()["data"][0];
    assert_eq!(
        (p["status"].as_str(), p["refunded_minor"].as_i64(), p["credits_taken_back"].as_i64(), p["shortfall"].as_i64()),
        (Some("refunded"), Some(500), Some(300), Some(200)),
        "{p}"
    );
    let logs = app.client.get("/v1/admin/logs?log_type=system", &app.admin).json().to_string();
    assert!(logs.contains("payment_refund_shortfall"), "{logs}");
    assert_eq!(app.count_where("events", "type = 'payment.refunded'"), 2);
    assert_eq!(app.audit()["valid"], true);

    // A dispute freezes what is left of another payment; winning it gives it back.
    let (payment, session) = checkout(&app, &ann.token, json!({"package": "p500"}));
    send(
        &app,
        &event("evt_paid2", "checkout.session.completed", completed(&session, &payment, &ann.id, 500)),
        WEBHOOK_SECRET,
    );
    assert_eq!(app.client.consume(&ann.token, 100).status, 201);
    let dispute = |id: &str, etype: &str, status: &str| {
        event(
            id,
            etype,
            json!({"id": "dp_1", "object": "dispute", "payment_intent": format!("pi_{session}"), "amount": 500,
                                "currency": "usd", "status": status}),
        )
    };
    assert_eq!(
        send(&app, &dispute("evt_d1", "charge.dispute.created", "needs_response"), WEBHOOK_SECRET).json()["outcome"],
        "frozen"
    );
    assert_eq!(app.balance(&ann)["balance"], 0);
    assert_eq!(app.client.consume(&ann.token, 1).status, 402, "frozen credits cannot be spent");
    assert_eq!(
        send(&app, &dispute("evt_d2", "charge.dispute.closed", "won"), WEBHOOK_SECRET).json()["outcome"],
        "restored"
    );
    assert_eq!(app.balance(&ann)["balance"], 400);
    assert_eq!(app.audit()["valid"], true);
}

/// An `invoice.paid` for period `k` of subscription `sub` (new API shape:
/// the subscription under `parent`).
fn invoice(k: i64, sub: &str, payment: &str, user: &str, period_end: i64) -> Value {
    event(
        &format!("evt_inv_{k}"),
        "invoice.paid",
        json!({"id": format!("in_{k}"), "object": "invoice", "amount_paid": 2000, "currency": "usd", "customer": "cus_ann",
               "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub,
                          "metadata": {"payment_id": payment, "user_id": user, "plan": "pro"}}},
               "lines": {"data": [{"period": {"start": period_end - 30 * 86_400, "end": period_end}}]}}),
    )
}

#[test]
fn a_plan_renews_three_periods_each_expiring_at_its_end_and_deletion_stops_renewals() {
    let stripe = FakeStripe::start();
    let app = payments_app(&stripe);
    let ann = app.user("ann");
    let (payment, session) = checkout(&app, &ann.token, json!({"plan": "pro"}));
    let sent = &stripe.requests()[0].form;
    assert_eq!(
        (
            sent["mode"].as_str(),
            sent["line_items[0][price_data][recurring][interval]"].as_str(),
            sent["subscription_data[metadata][plan]"].as_str()
        ),
        ("subscription", "month", "pro")
    );
    let day = 86_400;
    let first_end = now_s() + 30 * day;
    // The first invoice can come before the Checkout's own event.
    let r = send(&app, &invoice(1, "sub_1", &payment, &ann.id, first_end), WEBHOOK_SECRET);
    assert_eq!(r.json()["outcome"], "renewed", "{}", r.text());
    let done = json!({"id": session, "object": "checkout.session", "mode": "subscription", "payment_status": "paid",
                      "client_reference_id": ann.id, "metadata": {"payment_id": payment, "user_id": ann.id},
                      "amount_total": 2000, "currency": "usd", "customer": "cus_ann", "subscription": "sub_1"});
    assert_eq!(
        send(&app, &event("evt_cs", "checkout.session.completed", done), WEBHOOK_SECRET).json()["outcome"],
        "subscribed"
    );
    for k in 2..=3 {
        let r = send(&app, &invoice(k, "sub_1", &payment, &ann.id, first_end + (k - 1) * 30 * day), WEBHOOK_SECRET);
        assert_eq!(r.json()["outcome"], "renewed");
    }
    assert_eq!(
        send(&app, &invoice(3, "sub_1", &payment, &ann.id, first_end), WEBHOOK_SECRET).json()["outcome"],
        "duplicate"
    );
    let grants = app.client.get("/v1/credits/grants", &ann.token).json()["data"].as_array().unwrap().clone();
    assert_eq!(grants.len(), 3);
    for g in &grants {
        assert_eq!(
            (g["amount"].as_i64(), g["priority"].as_i64(), g["source"].as_str()),
            (Some(1000), Some(10), Some("payment"))
        );
    }
    let ends: Vec<&str> = grants.iter().map(|g| g["expires_at"].as_str().unwrap()).collect();
    assert!(ends.windows(2).all(|w| w[0] != w[1]), "each grant ends with its own period: {ends:?}");
    assert_eq!(app.count_where("events", "type = 'subscription.renewed'"), 3);
    let me = app.client.me(&ann.token).json();
    assert_eq!((me["plan"]["plan"].as_str(), me["plan"]["status"].as_str()), (Some("pro"), Some("active")), "{me}");
    assert!(me["plan"]["current_period_end"].is_string(), "{me}");
    // The plan's credits are spent before the wallet's.
    app.grant(&ann, 100);
    app.client.consume(&ann.token, 10);
    let wallet = app.client.get("/v1/credits/grants", &ann.token).json()["data"][0].clone();
    assert_eq!((wallet["source"].as_str(), wallet["remaining"].as_i64()), (Some("admin"), Some(100)), "{wallet}");

    let deleted = event(
        "evt_del",
        "customer.subscription.deleted",
        json!({"id": "sub_1", "object": "subscription", "status": "canceled"}),
    );
    assert_eq!(send(&app, &deleted, WEBHOOK_SECRET).json()["outcome"], "plan_ended");
    let r = send(&app, &invoice(4, "sub_1", &payment, &ann.id, first_end + 90 * day), WEBHOOK_SECRET);
    assert_eq!(r.json()["outcome"], "plan_ended", "no renewal after the end");
    assert_eq!(app.count_where("credit_grants", "source = 'payment'"), 3);
    assert!(app.client.me(&ann.token).json()["plan"].is_null());
    // The portal for ann's customer.
    let r = app.client.post("/v1/payments/portal", &ann.token, json!({"return_url": SHOP}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["url"].as_str().unwrap().starts_with(&format!("{}/p/session/", stripe.base)));
    assert_eq!(stripe.requests().last().unwrap().form["customer"], "cus_ann");
    assert_eq!(app.audit()["valid"], true);
}

fn put_topup(app: &TestApp, token: &str, body: Value) -> Resp {
    app.client.request("PUT", "/v1/payments/auto-topup", Some(token), &[], Some(body.to_string().as_bytes())).unwrap()
}

#[test]
fn auto_topup_fires_once_per_crossing_under_thirty_two_concurrent_consumes() {
    let stripe = FakeStripe::start();
    let app = payments_app(&stripe);
    let ann = app.user("ann");
    let r = put_topup(&app, &ann.token, json!({"package": "p500", "threshold": 300, "enabled": true}));
    assert_eq!((r.status, r.error_code().as_str()), (409, "no_saved_card"), "a card must be saved first");
    for (bad, param) in [
        (json!({"package": "nope", "threshold": 300, "enabled": true}), "package"),
        (json!({"package": "p500", "threshold": 0, "enabled": true}), "threshold"),
        (json!({"package": "p500", "threshold": 300}), "enabled"),
    ] {
        let r = put_topup(&app, &ann.token, bad.clone());
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.text().contains(param), "{bad} names {param}: {}", r.text());
    }
    assert_eq!(app.count("auto_topups"), 0, "refused settings change nothing");
    // A first purchase saves the card.
    let (payment, session) = checkout(&app, &ann.token, json!({"package": "p500"}));
    send(
        &app,
        &event("evt_paid", "checkout.session.completed", completed(&session, &payment, &ann.id, 500)),
        WEBHOOK_SECRET,
    );
    let intent = json!({"id": format!("pi_{session}"), "object": "payment_intent", "amount": 500, "amount_received": 500,
                        "currency": "usd", "customer": "cus_ann", "payment_method": "pm_card_visa", "status": "succeeded",
                        "metadata": {"payment_id": payment}});
    assert_eq!(
        send(&app, &event("evt_pi", "payment_intent.succeeded", intent), WEBHOOK_SECRET).json()["outcome"],
        "recorded"
    );
    let r = put_topup(&app, &ann.token, json!({"package": "p500", "threshold": 300, "enabled": true}));
    assert_eq!(r.status, 200, "{}", r.text());

    // 32 callers spend from 500 to 180: one crossing below 300.
    let spend = |total_each: i64| {
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let (client, token) = (app.client.clone(), ann.token.clone());
                std::thread::spawn(move || {
                    for _ in 0..total_each {
                        assert_eq!(client.consume(&token, 1).status, 201);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
    };
    spend(10);
    eventually("the top-up", Duration::from_secs(10), || stripe.count("/v1/payment_intents") == 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stripe.count("/v1/payment_intents"), 1, "once per crossing");
    let pi = stripe.requests().into_iter().find(|r| r.path == "/v1/payment_intents").unwrap();
    assert_eq!(
        (
            pi.form["amount"].as_str(),
            pi.form["customer"].as_str(),
            pi.form["payment_method"].as_str(),
            pi.form["off_session"].as_str()
        ),
        ("500", "cus_ann", "pm_card_visa", "true")
    );
    let topup = pi.form["metadata[payment_id]"].clone();
    assert_eq!(pi.idempotency_key.as_deref(), Some(format!("tollgate-topup-{topup}").as_str()));
    assert_eq!(app.balance(&ann)["balance"], 180, "credits only when Stripe says it was paid");
    let succeeded = json!({"id": "pi_test_2", "object": "payment_intent", "amount": 500, "amount_received": 500, "currency": "usd",
                           "customer": "cus_ann", "payment_method": "pm_card_visa", "status": "succeeded",
                           "metadata": {"payment_id": topup, "user_id": ann.id}});
    let r = send(&app, &event("evt_topup", "payment_intent.succeeded", succeeded), WEBHOOK_SECRET);
    assert_eq!(r.json()["outcome"], "granted", "{}", r.text());
    assert_eq!(app.balance(&ann)["balance"], 680);

    // Back above the threshold, then below again: a second crossing, and
    // this time the card is declined: an event and a log, no retry storm.
    stripe.decline_cards(true);
    // The top-up re-arms on a pass that sees the balance back above the
    // threshold; spending before that pass would cross nothing.
    eventually("re-armed", Duration::from_secs(10), || app.count_where("auto_topups", "armed = 1") == 1);
    spend(13);
    eventually("the second top-up", Duration::from_secs(10), || stripe.count("/v1/payment_intents") == 2);
    eventually("the failure event", Duration::from_secs(10), || {
        app.count_where("events", "type = 'payment.failed'") == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stripe.count("/v1/payment_intents"), 2);
    let logs = app.client.get("/v1/admin/logs?log_type=system", &app.admin).json().to_string();
    assert!(logs.contains("auto_topup_failed") && logs.contains("insufficient funds"), "{logs}");
    assert_eq!(app.audit()["valid"], true);
}

/// Stripe's own Python library signs an event tollgate accepts, and
/// verifies a signature tollgate made (the scheme is the same both ways).
#[test]
fn stripes_python_library_and_tollgate_agree_on_webhook_signatures() {
    let Some(python) = crate::messages::sdk_python() else {
        assert!(std::env::var_os("CI").is_none(), "no SDK venv under CI: run scripts/test, which installs it");
        eprintln!("skipped: Stripe's Python library (scripts/test installs it into target/sdk-check-venv)");
        return;
    };
    let stripe = FakeStripe::start();
    let app = payments_app(&stripe);
    let ann = app.user("ann");
    let (payment, session) = checkout(&app, &ann.token, json!({"package": "p500"}));
    let e = event("evt_from_stripe_lib", "checkout.session.completed", completed(&session, &payment, &ann.id, 500));
    let body = e.to_string();
    let ours = tollgate::payments::signature::sign(WEBHOOK_SECRET, now_s(), body.as_bytes());
    let out = std::process::Command::new(python)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sdk_check/stripe_check.py"))
        .args([app.client.base.as_str(), WEBHOOK_SECRET, &body, &ours])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("tollgate's signature verified by stripe 16.1.0"), "{said}");
    assert_eq!(app.balance(&ann)["balance"], 500, "the event Stripe's library signed was granted");
}
