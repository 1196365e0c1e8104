//! Text messages through the deployment's SMS provider: who gets one for which notice, and the
//! provider's request. A case's steps go to the resident who handed it in; 督办 and a deadline
//! near go to its assignee (their duty phone in the master data's grid staff, else the
//! station's 网格长). Only mobile numbers are texted.

use std::collections::BTreeMap;

use base64::Engine as _;
use firmware_config::config::central::{Sms, SmsProvider};
use firmware_config::masterdata::Dataset;
use ring::hmac;
use serde_json::{json, Value};
use time::OffsetDateTime;

/// One message: to whom, with which template and parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub phone: String,
    pub template: String,
    pub params: BTreeMap<String, String>,
}

/// A mainland mobile number (11 digits from 13 to 19): landlines get no text.
pub fn is_mobile(phone: &str) -> bool {
    phone.len() == 11
        && phone.starts_with('1')
        && matches!(phone.as_bytes()[1], b'3'..=b'9')
        && phone.bytes().all(|b| b.is_ascii_digit())
}

/// The status a resident reads in a text (the kiosk's words).
fn status_text(s: &str) -> &str {
    match s {
        "registered" => "已登记",
        "assigned" => "已派遣到网格站",
        "accepted" => "网格员已接单",
        "handling" => "处置中",
        "transferred" => "已转办相关部门",
        "reported" => "已上报街道",
        "received" => "已受理",
        "reviewing" => "审查中",
        "decided" => "已决定",
        "delivered" => "已送达",
        "resolved" => "已办结",
        "closed" => "已结案",
        other => other,
    }
}

/// The message for notice `kind` with `data` (a case's notice), if the configuration has a
/// template for it and there is a mobile number to send it to.
pub fn message(
    cfg: &Sms,
    kind: &str,
    data: &Value,
    directory: Option<&Dataset>,
) -> Option<Message> {
    let template = cfg.templates.get(kind)?.clone();
    let text = |k: &str| data[k].as_str().unwrap_or_default().to_owned();
    let receipt = text("receipt");
    let phone = match kind {
        "case.status" => text("resident_phone"),
        "case.supervised" | "case.reminder" => duty_phone(
            directory?,
            data["station"].as_str()?,
            data["assignee"].as_str(),
        )?,
        _ => return None,
    };
    let phone = phone.trim().trim_start_matches("+86").to_owned();
    if !is_mobile(&phone) {
        return None;
    }
    let mut params = BTreeMap::from([("receipt".to_owned(), receipt)]);
    match kind {
        "case.status" => {
            params.insert("status".into(), status_text(&text("status")).to_owned());
        }
        _ => {
            params.insert("title".into(), text("title").chars().take(20).collect());
        }
    }
    Some(Message {
        phone,
        template,
        params,
    })
}

/// The assignee's duty phone among the station's staff, else the station's 网格长's.
fn duty_phone(d: &Dataset, station: &str, assignee: Option<&str>) -> Option<String> {
    let grid = d.grids.iter().find(|g| g.code == station)?;
    let by_name = assignee.and_then(|a| grid.staff.iter().find(|s| s.name == a));
    by_name
        .or_else(|| grid.staff.iter().find(|s| s.role == "网格长"))
        .map(|s| s.duty_phone.clone())
}

/// What goes to the provider: method, URL, headers and body.
#[derive(Debug)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// The provider's request for `m`, signed with `secret` at `now` (`nonce` unique per request).
pub fn request(cfg: &Sms, secret: &str, m: &Message, now: OffsetDateTime, nonce: &str) -> Request {
    let params = serde_json::to_string(&m.params).unwrap_or_default();
    match cfg.provider {
        SmsProvider::Aliyun => {
            let timestamp = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute(),
                now.second()
            );
            let mut query = BTreeMap::from([
                ("AccessKeyId", cfg.access_key_id.clone()),
                ("Action", "SendSms".to_owned()),
                ("Format", "JSON".to_owned()),
                ("PhoneNumbers", m.phone.clone()),
                ("RegionId", cfg.region.clone()),
                ("SignName", cfg.sign_name.clone()),
                ("SignatureMethod", "HMAC-SHA1".to_owned()),
                ("SignatureNonce", nonce.to_owned()),
                ("SignatureVersion", "1.0".to_owned()),
                ("TemplateCode", m.template.clone()),
                ("TemplateParam", params),
                ("Timestamp", timestamp),
                ("Version", "2017-05-25".to_owned()),
            ]);
            let signature = aliyun_signature(secret, "POST", &query);
            query.insert("Signature", signature);
            let body = form(&query);
            Request {
                url: cfg.url.clone(),
                headers: vec![(
                    "content-type",
                    "application/x-www-form-urlencoded".to_owned(),
                )],
                body: body.into_bytes(),
            }
        }
        SmsProvider::SignedJson => {
            let body = serde_json::to_vec(&json!({
                "phone": m.phone, "sign_name": cfg.sign_name, "template": m.template,
                "params": m.params, "nonce": nonce,
            }))
            .unwrap_or_default();
            let t = now.unix_timestamp();
            Request {
                url: cfg.url.clone(),
                headers: vec![
                    ("content-type", "application/json".to_owned()),
                    (
                        "x-gridedge-signature",
                        crate::notify::signature(secret, t, &body),
                    ),
                ],
                body,
            }
        }
    }
}

/// Whether the provider took the message, from its answer: an `aliyun` answer says
/// `"Code":"OK"`; a `signed_json` one, any 2xx.
pub fn taken(provider: SmsProvider, status: u16, body: &[u8]) -> Result<(), String> {
    if !(200..300).contains(&status) {
        return Err(format!(
            "the provider answered {status}: {}",
            String::from_utf8_lossy(body)
                .chars()
                .take(200)
                .collect::<String>()
        ));
    }
    match provider {
        SmsProvider::SignedJson => Ok(()),
        SmsProvider::Aliyun => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if v["Code"] == "OK" {
                Ok(())
            } else {
                Err(format!(
                    "the provider refused it: {} {}",
                    v["Code"], v["Message"]
                ))
            }
        }
    }
}

/// RFC 3986 percent-encoding as Alibaba Cloud's signature wants it: everything but
/// `A-Z a-z 0-9 - _ . ~` encoded, spaces as `%20`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn form(q: &BTreeMap<&str, String>) -> String {
    q.iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Alibaba Cloud RPC signature v1: base64 HMAC-SHA1, keyed `secret&`, of
/// `METHOD&%2F&encode(sorted, encoded query)`.
pub fn aliyun_signature(secret: &str, method: &str, q: &BTreeMap<&str, String>) -> String {
    let to_sign = format!("{method}&{}&{}", encode("/"), encode(&form(q)));
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("{secret}&").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, to_sign.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::config::secret::SecretRef;
    use firmware_config::masterdata::{GridUnit, Level, Staff};

    fn cfg(provider: SmsProvider) -> Sms {
        Sms {
            provider,
            url: "https://dysmsapi.aliyuncs.com/".into(),
            access_key_id: "testId".into(),
            secret: SecretRef::env("SMS_SECRET"),
            sign_name: "红星街道".into(),
            templates: BTreeMap::from([
                ("case.status".into(), "SMS_1".into()),
                ("case.supervised".into(), "SMS_2".into()),
            ]),
            region: "cn-hangzhou".into(),
        }
    }

    #[test]
    fn the_aliyun_signature_is_the_documented_one() {
        // The worked example of Alibaba Cloud's RPC signature documentation (v1, HMAC-SHA1):
        // AccessKeySecret "testSecret", a DescribeRegions GET.
        let q = BTreeMap::from([
            ("AccessKeyId", "testid".to_owned()),
            ("Action", "DescribeRegions".to_owned()),
            ("Format", "XML".to_owned()),
            ("SignatureMethod", "HMAC-SHA1".to_owned()),
            (
                "SignatureNonce",
                "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf".to_owned(),
            ),
            ("SignatureVersion", "1.0".to_owned()),
            ("Timestamp", "2016-02-23T12:46:24Z".to_owned()),
            ("Version", "2014-05-26".to_owned()),
        ]);
        assert_eq!(
            aliyun_signature("testsecret", "GET", &q),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
        assert_eq!(encode("a b*~/中"), "a%20b%2A~%2F%E4%B8%AD");
    }

    #[test]
    fn residents_get_their_cases_steps_and_assignees_their_supervision_by_mobile_only() {
        let c = cfg(SmsProvider::Aliyun);
        let status = json!({"receipt": "gw-1-000001-AB", "status": "accepted", "resident_phone": "13800001234"});
        let m = message(&c, "case.status", &status, None).unwrap();
        assert_eq!(
            (m.phone.as_str(), m.template.as_str()),
            ("13800001234", "SMS_1")
        );
        assert_eq!(m.params["status"], "网格员已接单");
        // A landline, a made-up number, a kind without a template: no text.
        for phone in ["010-62345678", "12345678901", "1380000123"] {
            let d = json!({"receipt": "r", "status": "accepted", "resident_phone": phone});
            assert_eq!(message(&c, "case.status", &d, None), None, "{phone}");
        }
        assert_eq!(message(&c, "case.reminder", &status, None), None);
        // 督办: to the assignee's duty phone, else the 网格长's.
        let staff = |name: &str, role: &str, phone: &str| Staff {
            name: name.into(),
            role: role.into(),
            duty_phone: phone.into(),
        };
        let d = Dataset {
            grids: vec![GridUnit {
                staff: vec![
                    staff("刘建国", "网格长", "17738314187"),
                    staff("陈春梅", "专职网格员", "19638418916"),
                ],
                ..crate::cases::scope::tests::grid("B1", Level::Base, None)
            }],
            ..Default::default()
        };
        let pressed = |assignee: &str| {
            let data =
                json!({"receipt": "r", "station": "B1", "assignee": assignee, "title": "路灯"});
            message(&c, "case.supervised", &data, Some(&d)).map(|m| m.phone)
        };
        assert_eq!(pressed("陈春梅").as_deref(), Some("19638418916"));
        assert_eq!(pressed("外来人员").as_deref(), Some("17738314187"));
    }

    #[test]
    fn a_request_carries_its_signature_and_the_answer_says_whether_it_was_taken() {
        let m = Message {
            phone: "13800001234".into(),
            template: "SMS_1".into(),
            params: BTreeMap::from([("status".into(), "已办结".into())]),
        };
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let r = request(&cfg(SmsProvider::Aliyun), "s3cret", &m, now, "n-1");
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains("PhoneNumbers=13800001234"), "{body}");
        assert!(
            body.contains("Timestamp=2027-01-15T08%3A00%3A00Z"),
            "{body}"
        );
        assert!(body.contains("&Signature="), "{body}");
        assert_eq!(taken(SmsProvider::Aliyun, 200, br#"{"Code":"OK"}"#), Ok(()));
        assert!(taken(
            SmsProvider::Aliyun,
            200,
            br#"{"Code":"isv.BUSINESS_LIMIT_CONTROL"}"#
        )
        .unwrap_err()
        .contains("BUSINESS_LIMIT_CONTROL"));
        assert!(taken(SmsProvider::SignedJson, 503, b"busy").is_err());
        let j = request(&cfg(SmsProvider::SignedJson), "s3cret", &m, now, "n-1");
        assert!(j
            .headers
            .iter()
            .any(|(k, v)| *k == "x-gridedge-signature" && v.starts_with("t=1800000000,v1=")));
    }
}
