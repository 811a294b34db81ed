//! Contract tests: the response shapes OpenRouter documents or was seen to
//! serve (`tests/fixtures/`, provenance in its README) decode with the crate's
//! wire types into the values the spec gives, and the constructed robustness
//! cases are handled by issue 12's rules. Error bodies are served verbatim
//! through the simulator to the real client. A few checks also hold the
//! simulator itself to the real shapes.
//!
//! Tests marked `#[ignore = "issue 12: …"]` state behaviour the client does
//! not have yet; they are un-ignored when it does.

mod common;

use chrono::NaiveDate;
use common::*;
use openrouter_cost_exporter::money::Usd;
use openrouter_cost_exporter::sim::{Fault, FaultResponse, SimKey};

/// Every decoding call in this file goes through here, so that when the wire
/// types move or change only this module needs adapting.
mod wire {
    use chrono::NaiveDate;
    use openrouter_cost_exporter::activity::{ActivityCache, ActivityRow, ModelTotals};
    use openrouter_cost_exporter::money::Usd;
    use openrouter_cost_exporter::upstream::{parse_keys_page, ApiKey, Credits, Workspace};
    use serde::de::DeserializeOwned;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    struct Envelope<T> {
        data: T,
    }

    /// `{"data": T}`, as the client decodes every endpoint.
    fn data<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice::<Envelope<T>>(bytes)
            .map(|e| e.data)
            .map_err(|e| e.to_string())
    }

    /// One `GET /keys` page, through the client's own page decoder.
    pub fn keys_page(bytes: &[u8]) -> Result<Vec<ApiKey>, String> {
        parse_keys_page(bytes).map_err(|e| e.to_string())
    }

    /// `GET /keys/{hash}`: one key object (the same schema as a listed key).
    pub fn key_object(bytes: &[u8]) -> Result<ApiKey, String> {
        data(bytes)
    }

    /// `GET /key` as direct-key mode reads it: the object has no `hash` or
    /// `name`, so the exporter adds `hash = "direct:<name>"` and the configured name.
    pub fn current_key(bytes: &[u8], name: &str) -> Result<ApiKey, String> {
        let mut value: serde_json::Value = data(bytes)?;
        let obj = value.as_object_mut().ok_or("data is not an object")?;
        obj.insert("hash".into(), format!("direct:{name}").into());
        obj.insert("name".into(), name.into());
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    pub fn credits(bytes: &[u8]) -> Result<Credits, String> {
        data(bytes)
    }

    pub fn workspaces(bytes: &[u8]) -> Result<Vec<Workspace>, String> {
        data(bytes)
    }

    pub fn workspace(bytes: &[u8]) -> Result<Workspace, String> {
        data(bytes)
    }

    pub fn activity(bytes: &[u8]) -> Result<Vec<ActivityRow>, String> {
        data(bytes)
    }

    /// What an activity call made on `today` leaves in the cache: the spend of
    /// the last 6 completed days (`None` if the call could not be read) and
    /// the per-model totals of the 30 completed days.
    pub fn activity_figures(
        rows: &[ActivityRow],
        today: NaiveDate,
    ) -> (Option<Usd>, BTreeMap<String, ModelTotals>) {
        let mut cache = ActivityCache::default();
        cache.apply("h", rows, today);
        let six = cache.completed_usage("h", today, 6);
        let models = cache
            .models("h", today)
            .into_iter()
            .flatten()
            .map(|(m, t)| (m.to_string(), t))
            .collect();
        (six, models)
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

/// An observed `data` object put in the `{"data": …}` envelope it came in.
fn enveloped(name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "data": fixture_json(name) })).unwrap()
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn usd(v: f64) -> Usd {
    Usd::from_f64(v).unwrap()
}

const SPEC_HASH: &str = "f01d52606dc8f0a8303a7b5cc3fa07109c2e346cec7c0a16b40de462992ce943";
const SPEC_WORKSPACE: &str = "0df9e665-d932-5740-b2c7-b52af166bc11";

// ------------------------------------------------------------ GET /keys

#[test]
fn keys_list_spec_example() {
    let keys = wire::keys_page(&fixture("keys_list.spec.json")).unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(&*k.hash, SPEC_HASH);
    assert_eq!(&*k.name, "My Production Key");
    // The list example's label is a name, not the masked key.
    assert_eq!(&*k.label, "Production API Key");
    assert_eq!(k.disabled, Some(false));
    assert_eq!(k.limit, Some(100.0));
    assert_eq!(k.limit_remaining, Some(74.5));
    assert_eq!(k.limit_reset.as_deref(), Some("monthly"));
    for v in [k.usage, k.usage_daily, k.usage_weekly, k.usage_monthly] {
        assert_eq!(v, Some(25.5));
    }
    for v in [
        k.byok_usage,
        k.byok_usage_daily,
        k.byok_usage_weekly,
        k.byok_usage_monthly,
    ] {
        assert_eq!(v, Some(17.38));
    }
    assert_eq!(k.workspace_id.as_deref(), Some(SPEC_WORKSPACE));
    assert_eq!(k.expires_at.as_deref(), Some("2027-12-31T23:59:59Z"));
}

#[test]
fn keys_list_item_example_has_the_masked_label() {
    let keys = wire::keys_page(&fixture("keys_list.spec_item_example.json")).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(&*keys[0].label, "sk-or-v1-0e6...1c96");
    assert_eq!(&*keys[0].hash, SPEC_HASH);
    assert_eq!(keys[0].usage, Some(25.5));
}

#[test]
fn keys_list_older_shape_from_the_management_key_guide() {
    let keys = wire::keys_page(&fixture("keys_list.mgmt_doc.json")).unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(&*k.hash, "<YOUR_KEY_HASH>");
    assert_eq!(&*k.name, "Customer Key");
    assert_eq!(&*k.label, "sk-or-v1-abc...123");
    assert_eq!(k.limit, Some(10.0));
    assert_eq!(k.limit_remaining, Some(10.0));
    // null = never resets; absent fields are unknown, not invented.
    assert_eq!(k.limit_reset, None);
    assert_eq!(k.workspace_id, None);
    assert_eq!(k.expires_at, None);
    assert_eq!(k.usage, Some(0.0));
    assert_eq!(k.byok_usage_monthly, Some(0.0));
}

#[test]
fn key_by_hash_is_the_same_key_object() {
    let k = wire::key_object(&fixture("key_by_hash.spec.json")).unwrap();
    let listed = wire::keys_page(&fixture("keys_list.spec.json")).unwrap();
    assert_eq!(k, listed[0]);
}

/// Issue 12 point 2: `name`, `label`, `disabled` null or absent never sink a
/// page; a key whose `disabled` is unknown is not reported as enabled.
#[test]
fn keys_with_null_identity_fields_still_decode() {
    let mut page = fixture_json("keys_list.spec.json");
    let key = page["data"][0].as_object_mut().unwrap();
    for field in ["name", "label", "disabled"] {
        key.insert(field.into(), serde_json::Value::Null);
    }
    let keys = wire::keys_page(&serde_json::to_vec(&page).unwrap()).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].usage, Some(25.5));
}

// ------------------------------------------------------------ GET /key

#[test]
fn key_current_spec_example_reads_as_a_direct_key() {
    let k = wire::current_key(&fixture("key_current.spec.json"), "acme-direct").unwrap();
    assert_eq!(&*k.hash, "direct:acme-direct");
    assert_eq!(&*k.name, "acme-direct");
    assert_eq!(&*k.label, "sk-or-v1-au7...890");
    assert_eq!(k.limit, Some(100.0));
    assert_eq!(k.limit_remaining, Some(74.5));
    assert_eq!(k.usage_monthly, Some(25.5));
    assert_eq!(k.byok_usage, Some(17.38));
    assert_eq!(k.workspace_id, None, "/key has no workspace_id");
}

#[test]
fn key_current_observed_live_figures_keep_nine_decimals() {
    for name in [
        "constructed/key_current.from_codexbar_2605_enveloped.json",
        "observed/key_current_data.codexbar_2605.json",
    ] {
        let bytes = if name.starts_with("observed/") {
            enveloped(name)
        } else {
            fixture(name)
        };
        let k = wire::current_key(&bytes, "live").unwrap();
        assert_eq!(k.limit, Some(500.0), "{name}");
        assert_eq!(k.limit_remaining, Some(454.542594979));
        assert_eq!(k.limit_reset.as_deref(), Some("monthly"));
        assert_eq!(k.usage, Some(433.286754736));
        // Observed on a Monday: the UTC week began today.
        assert_eq!(k.usage_daily, Some(3.404645509));
        assert_eq!(k.usage_weekly, Some(3.404645509));
        assert_eq!(k.usage_monthly, Some(45.457405021));
        // limit_remaining = limit - usage_monthly for a monthly reset, exactly in nano-dollars.
        assert_eq!(
            usd(500.0).checked_sub(usd(45.457405021)),
            Some(usd(454.542594979))
        );
    }
}

#[test]
fn key_current_legacy_observed_shape_decodes() {
    let k = wire::current_key(
        &enveloped("observed/key_current_data.simonw_llm_openrouter_24.json"),
        "legacy",
    )
    .unwrap();
    assert_eq!(&*k.label, "sk-or-v1-0fa...240");
    assert_eq!(k.limit, None);
    assert_eq!(k.limit_remaining, None);
    assert_eq!(k.usage, Some(0.65017511));
    // No window fields in this old shape: unknown, not zero.
    assert_eq!(k.usage_daily, None);
    assert_eq!(k.byok_usage, None);
}

// ------------------------------------------------------------ GET /credits

#[test]
fn credits_spec_example() {
    let c = wire::credits(&fixture("credits.spec.json")).unwrap();
    assert_eq!(c.total_credits, 100.5);
    assert_eq!(c.total_usage, 25.75);
}

// ------------------------------------------------------------ GET /workspaces

#[test]
fn workspaces_list_and_get_spec_examples() {
    let list = wire::workspaces(&fixture("workspaces_list.spec.json")).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, "550e8400-e29b-41d4-a716-446655440000");
    assert_eq!(list[0].name.as_deref(), Some("Production"));
    let one = wire::workspace(&fixture("workspace_get.spec.json")).unwrap();
    assert_eq!(one.id, list[0].id);
    // What slug resolution needs is in the body (the wire type does not keep it yet).
    assert_eq!(
        fixture_json("workspaces_list.spec.json")["data"][0]["slug"],
        "production"
    );
    assert_eq!(fixture_json("workspaces_list.spec.json")["total_count"], 1);
}

// ------------------------------------------------------------ GET /activity

#[test]
fn activity_spec_example() {
    let rows = wire::activity(&fixture("activity.spec.json")).unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.date, "2025-08-24");
    assert_eq!(r.model, "openai/gpt-4.1");
    assert_eq!(r.usage, Some(0.015));
    assert_eq!(r.byok_usage_inference, 0.012);
    assert_eq!(r.requests, 5);
    assert_eq!(r.prompt_tokens, 50);
    assert_eq!(r.completion_tokens, 125);
    assert_eq!(r.reasoning_tokens, 25);
    let (spend, models) = wire::activity_figures(&rows, day("2025-08-25"));
    assert_eq!(spend, Some(usd(0.015)));
    let model = &models["openai/gpt-4.1"];
    assert_eq!(model.usage, usd(0.015));
    assert_eq!(model.byok_usage, usd(0.012));
    assert_eq!(model.requests, 5);
    assert_eq!(model.prompt_tokens, 50);
    assert_eq!(model.completion_tokens, 125);
    assert_eq!(model.reasoning_tokens, 25);
}

/// Live `/activity` serves `date` as "YYYY-MM-DD HH:MM:SS" (live-evidence
/// notes): the row counts for its UTC day; the extra `byok_requests` is ignored.
#[test]
fn activity_timestamp_shaped_date_counts_for_its_day() {
    let rows = wire::activity(&fixture(
        "constructed/activity.date_with_time_and_byok_requests.json",
    ))
    .expect("decodes");
    // Read the day after: the row is yesterday's.
    let (spend, models) = wire::activity_figures(&rows, day("2026-01-17"));
    assert_eq!(spend, Some(usd(0.015)));
    assert_eq!(models["openai/gpt-4.1"].usage, usd(0.015));
    assert_eq!(models["openai/gpt-4.1"].requests, 5);
    // Read on the row's own day: it is today's, which the windows never
    // include, so it counts nowhere; the day is known, and zero.
    let (spend, models) = wire::activity_figures(&rows, day("2026-01-16"));
    assert_eq!(spend, Some(Usd::ZERO));
    assert!(models.is_empty());
}

/// Today's client at least decodes the timestamp-shaped body (the loss is
/// in the day matching above, not in the decode).
#[test]
fn activity_timestamp_shaped_date_decodes() {
    let rows = wire::activity(&fixture(
        "constructed/activity.date_with_time_and_byok_requests.json",
    ))
    .unwrap();
    assert_eq!(rows[0].date, "2026-01-16 00:00:00");
    assert_eq!(rows[0].usage, Some(0.015));
}

/// Null or absent `reasoning_tokens` / `byok_usage_inference` never fail the
/// body; the amounts that are there are kept exactly.
#[test]
fn activity_null_and_absent_counts_decode() {
    let rows = wire::activity(&fixture(
        "constructed/activity.null_reasoning_and_byok.json",
    ))
    .expect("nulls never sink the body");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].usage, Some(0.015));
    assert_eq!(rows[0].requests, 5);
    assert_eq!(rows[1].usage, Some(0.2));
    assert_eq!(rows[1].completion_tokens, 40);
    let (spend, models) = wire::activity_figures(&rows, day("2025-08-25"));
    assert_eq!(spend, Some(usd(0.215)));
    assert_eq!(models["openai/gpt-4.1"].usage, usd(0.015));
    assert_eq!(models["anthropic/claude-sonnet-4"].usage, usd(0.2));
}

/// Absent counts already decode (serde default); only `null` fails today.
#[test]
fn activity_absent_counts_decode() {
    let mut body = fixture_json("constructed/activity.null_reasoning_and_byok.json");
    body["data"].as_array_mut().unwrap().remove(0);
    let rows = wire::activity(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].usage, Some(0.2));
}

// ------------------------------------------------------------ error bodies, through the client

fn reply(path: &str, status: u16, fixture_name: &str) -> Fault {
    let body = String::from_utf8(fixture(fixture_name)).unwrap();
    Fault::new(path, FaultResponse::Reply { status, body })
}

async fn one_key_sim() -> openrouter_cost_exporter::sim::SimServer {
    let mut state = empty_state();
    state.keys.push(key_with_usage(WS_A, 1, "acme-one", 1.0));
    state.total_credits = 100.0;
    state.total_usage = state.keys_lifetime_usage();
    start_sim(state).await
}

const ACME: &str = "  acme:\n    keys: [{name_glob: 'acme-*'}]\n";

#[tokio::test]
async fn error_401_is_unauthorized_and_not_retried() {
    let sim = one_key_sim().await;
    sim.state()
        .faults
        .push(reply("/workspaces", 401, "error_401.spec.json"));
    let exporter = exporter(config(&sim.base_url(), ACME));
    let err = exporter.refresh().await.unwrap_err();
    assert_eq!(err.reason(), "unauthorized");
    assert!(
        err.to_string().contains("Missing Authentication header"),
        "{err}"
    );
    let calls = sim.state().requests.len();
    assert_eq!(calls, 1, "401 is not retried");
}

#[tokio::test]
async fn error_429_bodies_are_retried_then_rate_limited() {
    for name in ["error_429.spec.json", "error_429.limits_doc.json"] {
        let sim = one_key_sim().await;
        // Once: retried and the refresh succeeds.
        sim.state()
            .faults
            .push(reply("/workspaces", 429, name).times(1));
        let exporter = exporter(config(&sim.base_url(), ACME));
        exporter.refresh().await.expect(name);
        // Always: rate_limited, with OpenRouter's message.
        sim.state().faults.push(reply("/workspaces", 429, name));
        let err = exporter.refresh().await.unwrap_err();
        assert_eq!(err.reason(), "rate_limited", "{name}");
        assert!(err.to_string().contains("Rate limit exceeded"), "{err}");
    }
}

#[tokio::test]
async fn error_400_activity_bodies_fail_the_activity_run_as_client_errors() {
    for name in [
        "error_400_activity.spec.json",
        "observed/error_400_activity_today.codexbar_3133.json",
    ] {
        let sim = one_key_sim().await;
        sim.state().faults.push(reply("/activity", 400, name));
        let yaml = format!(
            "{}activity:\n  enabled: true\n",
            config_yaml(&sim.base_url(), ACME)
        );
        let exporter =
            common::exporter(openrouter_cost_exporter::config::Config::parse(&yaml, "t").unwrap());
        exporter.refresh().await.unwrap();
        let err = exporter.refresh_activity().await.unwrap_err();
        assert_eq!(err.reason(), "client_error", "{name}");
        let message = fixture_json(name)["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(err.to_string().contains(&message), "{err}");
    }
}

/// Issue 12 point 3: a `/credits` 403 (the spec's body) leaves the key and
/// company figures published and fresh.
#[tokio::test]
async fn error_403_on_credits_keeps_key_figures() {
    let sim = one_key_sim().await;
    sim.state()
        .faults
        .push(reply("/credits", 403, "error_403_credits.spec.json"));
    let exporter = exporter(config(&sim.base_url(), ACME));
    exporter.refresh().await.expect("refresh without /credits");
    let samples = parse(&body(&exporter));
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "acme"), ("window", "lifetime")]
        ),
        10.0
    );
    assert!(find(&samples, "openrouter_account_credits_usd", &[]).is_empty());
}

// ------------------------------------------------------------ the simulator against the real shapes

/// A simulated key has exactly the fields of the spec's key object.
#[test]
fn simulated_keys_have_the_spec_fields() {
    let spec = fixture_json("keys_list.spec.json");
    let mut spec_fields: Vec<&String> = spec["data"][0].as_object().unwrap().keys().collect();
    let sim = SimKey::new(WS_A, &hash(1), "x");
    let mut sim_fields: Vec<&String> = sim.fields.keys().collect();
    spec_fields.sort();
    sim_fields.sort();
    assert_eq!(sim_fields, spec_fields);
}

/// The simulator's workspace objects carry every field of the spec's, and
/// its `/activity` 400 for today is the body seen live.
#[tokio::test]
async fn simulated_workspaces_and_activity_errors_match_the_real_ones() {
    let sim = one_key_sim().await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        http.get(format!("{}{path}", sim.base_url()))
            .bearer_auth(MANAGEMENT_KEY)
            .send()
    };
    let text = get("/workspaces".into())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let spec = fixture_json("workspaces_list.spec.json");
    for field in spec["data"][0].as_object().unwrap().keys() {
        if field == "include_byok_in_budgets" {
            continue; // optional in the spec
        }
        assert!(
            listed["data"][0].get(field).is_some(),
            "simulated workspace lacks {field}"
        );
    }
    assert!(listed.get("total_count").is_some());
    let today = chrono::Utc::now().date_naive();
    let resp = get(format!("/activity?api_key_hash={}&date={today}", hash(1)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let got: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    let live = fixture_json("observed/error_400_activity_today.codexbar_3133.json");
    assert_eq!(got["error"]["message"], live["error"]["message"]);
    assert_eq!(got["error"]["code"], live["error"]["code"]);
}

// ------------------------------------------------------------ issue 15

mod org_wire {
    use openrouter_cost_exporter::upstream::{
        CountedPage, GuardrailKeyAssignment, KeyCheck, Member, WorkspaceBudget,
    };
    use serde::de::DeserializeOwned;

    pub fn counted<T: DeserializeOwned>(bytes: &[u8]) -> (Vec<T>, Option<u64>) {
        let page: CountedPage<T> = serde_json::from_slice(bytes).expect("decodes");
        (page.data, page.total_count)
    }

    pub fn members(bytes: &[u8]) -> (Vec<Member>, Option<u64>) {
        counted(bytes)
    }

    pub fn assignments(bytes: &[u8]) -> (Vec<GuardrailKeyAssignment>, Option<u64>) {
        counted(bytes)
    }

    pub fn budgets(bytes: &[u8]) -> Vec<WorkspaceBudget> {
        #[derive(serde::Deserialize)]
        struct Envelope {
            data: Vec<WorkspaceBudget>,
        }
        serde_json::from_slice::<Envelope>(bytes)
            .expect("decodes")
            .data
    }

    pub fn key_check(bytes: &[u8]) -> KeyCheck {
        #[derive(serde::Deserialize)]
        struct Envelope {
            data: KeyCheck,
        }
        serde_json::from_slice::<Envelope>(bytes)
            .expect("decodes")
            .data
    }
}

#[test]
fn organization_members_spec_example() {
    let (members, total) = org_wire::members(&fixture("organization_members.spec.json"));
    assert_eq!(total, Some(25));
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].id, "user_2dHFtVWx2n56w6HkM0000000000");
    assert_eq!(members[0].email, "jane.doe@example.com");
    // The id a listed key names as its creator.
    let keys = wire::keys_page(&fixture("keys_list.spec.json")).unwrap();
    assert_eq!(
        keys[0].creator_user_id.as_deref(),
        Some(members[0].id.as_str())
    );
}

#[test]
fn guardrail_key_assignments_spec_example() {
    let (assignments, total) =
        org_wire::assignments(&fixture("guardrail_key_assignments.spec.json"));
    assert_eq!(total, Some(1));
    assert_eq!(
        assignments[0].key_hash,
        "c56454edb818d6b14bc0d61c46025f1450b0f4012d12304ab40aacb519fcbc93"
    );
    assert_eq!(
        assignments[0].guardrail_id,
        "550e8400-e29b-41d4-a716-446655440001"
    );
}

#[test]
fn workspace_budgets_spec_and_doc_examples() {
    let spec = org_wire::budgets(&fixture("workspace_budgets.spec.json"));
    assert_eq!(spec.len(), 1);
    assert_eq!(spec[0].limit_usd, 100.0);
    assert_eq!(spec[0].reset_interval.as_deref(), Some("monthly"));
    assert_eq!(spec[0].workspace_id, "550e8400-e29b-41d4-a716-446655440000");
    let doc = org_wire::budgets(&fixture("workspace_budgets.doc.json"));
    assert_eq!(doc[0].limit_usd, 1000.0);
}

#[test]
fn key_current_spec_example_is_not_a_management_key() {
    let check = org_wire::key_check(&fixture("key_current.spec.json"));
    assert_eq!(check.is_management_key, Some(false));
}

#[tokio::test]
async fn spec_member_and_assignment_bodies_reach_the_exported_figures() {
    let sim = one_key_sim().await;
    // The spec bodies, served once each; the simulator's own (empty) lists end the paging.
    sim.state().faults.push(
        reply(
            "/organization/members",
            200,
            "organization_members.spec.json",
        )
        .times(1),
    );
    sim.state().faults.push(
        reply(
            "/guardrails/assignments/keys",
            200,
            "guardrail_key_assignments.spec.json",
        )
        .times(1),
    );
    {
        let mut state = sim.state();
        state.keys[0] = state.keys[0]
            .clone()
            .set("creator_user_id", "user_2dHFtVWx2n56w6HkM0000000000".into());
    }
    let companies = "  jane:\n    keys: [{creator: '@example.com'}]\n";
    let exporter = exporter(config(&sim.base_url(), companies));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "jane")]),
        1.0
    );
    for list in ["members", "guardrail_assignments"] {
        assert_eq!(
            value(
                &samples,
                "openrouter_organization_list_stale",
                &[("list", list)]
            ),
            0.0,
            "{list}"
        );
    }
}

// ------------------------------------------------------------ issue 22: shapes seen live

/// The `body` of a sample in `observed/live-2026/` (each file is the
/// research envelope: endpoint, provenance, source, notes, `body`).
fn live(name: &str) -> serde_json::Value {
    let sample = fixture_json(&format!("observed/live-2026/{name}"));
    sample
        .get("body")
        .cloned()
        .unwrap_or_else(|| panic!("{name} has no body"))
}

fn live_bytes(name: &str) -> Vec<u8> {
    serde_json::to_vec(&live(name)).unwrap()
}

fn live_reply(path: &str, status: u16, name: &str) -> Fault {
    let body = String::from_utf8(live_bytes(name)).unwrap();
    Fault::new(path, FaultResponse::Reply { status, body })
}

/// A wrong or revoked key: 401 `"User not found."` (five independent live reports).
#[tokio::test]
async fn error_401_user_not_found_is_unauthorized_and_not_retried() {
    let sim = one_key_sim().await;
    sim.state().faults.push(live_reply(
        "/workspaces",
        401,
        "error_401.user_not_found.json",
    ));
    let exporter = exporter(config(&sim.base_url(), ACME));
    let err = exporter.refresh().await.unwrap_err();
    assert_eq!(err.reason(), "unauthorized");
    assert!(err.to_string().contains("User not found."), "{err}");
    assert_eq!(sim.state().requests.len(), 1, "401 is not retried");
}

/// A live 429 body: the rate-limit headers inside the body as strings, the
/// reset in epoch milliseconds (here long past: no wait). Retried; when it
/// stays, `rate_limited` with OpenRouter's message.
#[tokio::test]
async fn error_429_live_body_is_retried_then_rate_limited() {
    let name = "error_429.free_models_per_min_2025-12-13.json";
    let sim = one_key_sim().await;
    sim.state()
        .faults
        .push(live_reply("/workspaces", 429, name).times(1));
    let exporter = exporter(config(&sim.base_url(), ACME));
    exporter.refresh().await.expect("retried at once");
    sim.state()
        .faults
        .push(live_reply("/workspaces", 429, name));
    let err = exporter.refresh().await.unwrap_err();
    assert_eq!(err.reason(), "rate_limited");
    assert!(err.to_string().contains("free-models-per-min"), "{err}");
}

/// The newest `/key` shape: `workspace_id` (null once the key's workspace
/// was deleted), `organization_id`, `allowed_data_regions`,
/// `free_model_daily_requests`, and `budgets` (constructed: no sample carries
/// them yet) decode as a direct key and as the management-key check.
#[test]
fn key_current_newest_shapes_decode() {
    let spec = live_bytes("spec_newest.key_current.example.json");
    let constructed = fixture("constructed/key_current.newest_workspace_deleted_with_budgets.json");
    for (bytes, workspace) in [(&spec, Some(SPEC_WORKSPACE)), (&constructed, None)] {
        let k = wire::current_key(bytes, "newest").unwrap();
        assert_eq!(k.workspace_id.as_deref(), workspace);
        assert_eq!(&*k.label, "sk-or-v1-au7...890");
        assert_eq!(k.limit, Some(100.0));
        assert_eq!(k.limit_remaining, Some(74.5));
        assert_eq!(k.usage_monthly, Some(25.5));
        assert_eq!(k.byok_usage_weekly, Some(17.38));
        assert_eq!(
            k.creator_user_id.as_deref(),
            Some("user_2dHFtVWx2n56w6HkM0000000000")
        );
        let check = org_wire::key_check(bytes);
        assert_eq!(check.is_management_key, Some(false));
    }
    let budgets =
        &fixture_json("constructed/key_current.newest_workspace_deleted_with_budgets.json")["data"]
            ["budgets"];
    assert_eq!(budgets.as_array().map(Vec::len), Some(2));
}

/// Live `/key` bodies: integer zeros and integer limits, nine-decimal amounts.
#[test]
fn key_current_live_bodies_decode() {
    let free = wire::current_key(
        &live_bytes("key_current.siglab_audit_2026-06-14.json"),
        "free",
    )
    .unwrap();
    for v in [
        free.usage,
        free.usage_daily,
        free.usage_weekly,
        free.usage_monthly,
        free.byok_usage,
    ] {
        assert_eq!(v, Some(0.0), "integer zeros are zeros");
    }
    assert_eq!(free.limit, None);
    let capped = wire::current_key(
        &live_bytes("key_current.go_mission_2026-09-08.json"),
        "capped",
    )
    .unwrap();
    assert_eq!(capped.limit, Some(100.0));
    assert_eq!(capped.limit_remaining, Some(92.634926647));
    assert_eq!(capped.usage_monthly, Some(7.365073353));
    assert_eq!(
        usd(100.0).checked_sub(usd(7.365073353)),
        Some(usd(92.634926647))
    );
}

/// The newest `/keys` item: `last_used_at` and `external_user` (nullable) are accepted.
#[test]
fn keys_list_newest_item_with_last_used_at_and_external_user_decodes() {
    let body = live("spec_newest.keys_item.example_last_used_at.json");
    assert_eq!(body["data"][0]["last_used_at"], "2026-09-15T15:45:00Z");
    assert!(body["data"][0]["external_user"].is_null());
    let keys = wire::keys_page(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(&*keys[0].hash, SPEC_HASH);
    assert_eq!(keys[0].usage, Some(25.5));
    assert_eq!(keys[0].workspace_id.as_deref(), Some(SPEC_WORKSPACE));
}

/// Live and newest `/activity` rows: `byok_requests`, `cached_tokens` (even
/// above `prompt_tokens`), integer zeros, a time part in `date`.
#[test]
fn activity_live_row_shapes_decode() {
    let owl = wire::activity(&live_bytes("activity.go_owl_alpha_2026-06-03.json")).unwrap();
    assert_eq!(owl[0].usage, Some(0.0), "an integer zero");
    assert_eq!(owl[0].byok_usage_inference, 0.0);
    assert_eq!((owl[0].requests, owl[0].prompt_tokens), (274, 14_993_669));
    let (spend, models) = wire::activity_figures(&owl, day("2026-06-04"));
    assert_eq!(spend, Some(Usd::ZERO));
    assert_eq!(models["openrouter/owl-alpha"].requests, 274);

    let spec = wire::activity(&live_bytes(
        "spec_newest.activity.example_cached_tokens.json",
    ))
    .unwrap();
    let cached = wire::activity(&fixture(
        "constructed/activity.cached_tokens_above_prompt.json",
    ))
    .unwrap();
    for rows in [&spec, &cached] {
        assert_eq!((rows[0].usage, rows[0].prompt_tokens), (Some(0.015), 50));
    }
    let (spend, _) = wire::activity_figures(&cached, day("2026-09-15"));
    assert_eq!(spend, Some(usd(0.015)));
}

/// The recorded 676-row undated `/activity` answer (2026-04, 31 dates, 152
/// `(date, model)` pairs split over endpoints, reasoning above completion
/// on 68 rows), decoded end to end through the wire type and
/// `activity::summarize`, read the day after its newest date (a 31st day
/// back) and on that date (a partial today). Every figure equals an
/// independent sum of the JSON.
#[test]
fn activity_recorded_676_rows_decode_and_sum_end_to_end() {
    use openrouter_cost_exporter::activity::{summarize, ActivityCache, HISTORY_DAYS};
    use std::collections::{BTreeMap, BTreeSet};

    let body = live("activity.tokentop_recorded_2026-04.json");
    let raw = body["data"].as_array().unwrap();
    let rows = wire::activity(&live_bytes("activity.tokentop_recorded_2026-04.json")).unwrap();
    assert_eq!((raw.len(), rows.len()), (676, 676));
    let dates: BTreeSet<&str> = raw
        .iter()
        .map(|r| &r["date"].as_str().unwrap()[..10])
        .collect();
    assert_eq!(dates.len(), 31);
    let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for r in raw {
        let pair = (r["date"].as_str().unwrap(), r["model"].as_str().unwrap());
        *pairs.entry(pair).or_default() += 1;
    }
    let split = pairs.values().filter(|rows| **rows > 1).count();
    assert_eq!(split, 152, "(date, model) pairs split over endpoints");
    let above = |a: &str, b: &str| raw.iter().filter(|r| r[a].as_u64() > r[b].as_u64()).count();
    assert_eq!(above("reasoning_tokens", "completion_tokens"), 68);

    let nanos = |v: &serde_json::Value| (v.as_f64().unwrap() * 1e9).round() as i128;
    for (today, newest_counted) in [("2026-04-23", "2026-04-22"), ("2026-04-22", "2026-04-21")] {
        let today = day(today);
        let first = today - chrono::Duration::days(HISTORY_DAYS);
        let counted = |r: &&serde_json::Value| {
            let d = day(&r["date"].as_str().unwrap()[..10]);
            d >= first && d < today
        };
        // Independently: the 30 completed days' spend, and each model's figures.
        let spend: i128 = raw.iter().filter(counted).map(|r| nanos(&r["usage"])).sum();
        let mut by_model: BTreeMap<&str, (i128, u64, u64, u64, u64)> = BTreeMap::new();
        for r in raw.iter().filter(counted) {
            let m = by_model.entry(r["model"].as_str().unwrap()).or_default();
            m.0 += nanos(&r["usage"]);
            m.1 += r["requests"].as_u64().unwrap();
            m.2 += r["prompt_tokens"].as_u64().unwrap();
            m.3 += r["completion_tokens"].as_u64().unwrap();
            m.4 += r["reasoning_tokens"].as_u64().unwrap();
        }
        assert!(raw
            .iter()
            .filter(counted)
            .any(|r| r["date"].as_str().unwrap().starts_with(newest_counted)));
        assert!(spend > 0);

        let history = summarize(&rows, today).expect("every row readable");
        assert_eq!(history.completed(), Usd::from_nanos(spend), "{today}");
        let mut cache = ActivityCache::default();
        assert_eq!(cache.apply("h", &rows, today), 0);
        assert_eq!(
            cache.completed_usage("h", today, 30),
            Some(Usd::from_nanos(spend))
        );
        let models: BTreeMap<&str, _> = cache.models("h", today).unwrap().collect();
        assert_eq!(models.len(), by_model.len(), "{today}");
        for (model, (usage, requests, prompt, completion, reasoning)) in &by_model {
            let got = models[model];
            assert_eq!(got.usage, Usd::from_nanos(*usage), "{model}");
            assert_eq!(
                (
                    got.requests,
                    got.prompt_tokens,
                    got.completion_tokens,
                    got.reasoning_tokens
                ),
                (*requests, *prompt, *completion, *reasoning),
                "{model}: endpoints summed, never overwritten"
            );
        }
    }
    // Read the day after: a 31st day back, and yesterday, so not a lagging window.
    let after = summarize(&rows, day("2026-04-23")).unwrap();
    assert!(after.shows_rollover() && !after.looks_behind());
}

/// Live `/credits`: a negative balance (usage above credits) and an integer
/// `total_credits` are published as they are.
#[tokio::test]
async fn credits_live_negative_balance_and_integer_credits() {
    for (name, credits, usage) in [
        (
            "credits.localrouter_negative_balance.json",
            770.8176,
            770.893717902,
        ),
        ("credits.dsh_2026-09-06.json", 1535.0, 1508.476966502),
    ] {
        let c = wire::credits(&live_bytes(name)).unwrap();
        assert_eq!((c.total_credits, c.total_usage), (credits, usage), "{name}");
        let sim = one_key_sim().await;
        sim.state().faults.push(live_reply("/credits", 200, name));
        let exporter = exporter(config(&sim.base_url(), ACME));
        exporter.refresh().await.expect(name);
        let samples = parse(&body(&exporter));
        assert_eq!(value(&samples, "openrouter_account_up", &[]), 1.0, "{name}");
        assert_eq!(
            value(&samples, "openrouter_account_credits_usd", &[]),
            credits
        );
        assert_eq!(value(&samples, "openrouter_account_usage_usd", &[]), usage);
    }
}
