//! Approval requests: quorum per group, veto threshold, separation of duties,
//! delegation, expiry, and re-opening on a material change (docs/language.md,
//! "Approval requests" and "What happens at run time").
//!
//! Every decision about an approval is an evidence decision of kind `approval`, with
//! the approver, the time, and the SHA-256 of what is approved: the canonical JSON of
//! the material fields' values (`{}` without material fields).

use std::sync::Arc;

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};
use steward_dsl::ast::ApprovalOutcome;
use steward_dsl::cel::Value;

use super::{Approval, ApprovalRole, Engine, Owner, Step, TimerKind, value_key};
use crate::decision::{Decision, Kind, canonical_json};
use crate::ruleset::{ApprovalSpec, Quorum};

/// The SHA-256 (hex) of the canonical JSON of the material values.
pub fn material_hash(material: &Map<String, Json>) -> String {
    let text = canonical_json(&Json::Object(material.clone()));
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Approval {
    fn is_eligible(&self, person: &str) -> bool {
        !self.excluded.iter().any(|e| e == person)
            && self
                .roles
                .iter()
                .any(|r| r.eligible.iter().any(|e| e == person))
    }

    fn has_decided(&self, person: &str) -> bool {
        self.approvals.iter().any(|a| a == person) || self.rejections.iter().any(|a| a == person)
    }

    fn groups(&self) -> String {
        let names: Vec<String> = self
            .roles
            .iter()
            .map(|r| format!("`{}`", r.group))
            .collect();
        match names.len() {
            1 => format!("group {}", names[0]),
            _ => format!("groups {}", names.join(", ")),
        }
    }

    fn met(&self) -> bool {
        self.roles.iter().all(|r| r.approvals.len() >= r.required)
    }

    /// "1 of 2" for one group; "security 1 of 1, cab 1 of 2" for several.
    fn progress(&self) -> String {
        match self.roles.as_slice() {
            [one] => format!("{} of {}", one.approvals.len(), one.required),
            roles => roles
                .iter()
                .map(|r| format!("{} {} of {}", r.group, r.approvals.len(), r.required))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Counts an approval; returns the group it counts in.
    ///
    /// An approver in several groups counts in one. Approvers are placed in the order
    /// they approved, each in the first group (in the order written) that has them and
    /// still needs approvers; when none does, one already placed is moved to another
    /// of their groups that still needs approvers, if that frees a place (so as many
    /// counts as possible are met). An approver no group needs counts in their first.
    fn count_approval(&mut self, person: &str) -> String {
        self.approvals.push(person.to_string());
        let people = self.approvals.clone();
        let mut placed: Vec<Vec<usize>> = vec![Vec::new(); self.roles.len()];
        let mut spare = Vec::new();
        for i in 0..people.len() {
            let mut seen = vec![false; self.roles.len()];
            if !self.place(i, &people, &mut placed, &mut seen) {
                spare.push(i);
            }
        }
        for i in spare {
            if let Some(r) = self
                .roles
                .iter()
                .position(|r| r.eligible.contains(&people[i]))
            {
                placed[r].push(i);
            }
        }
        let mut group = String::new();
        for (role, indices) in self.roles.iter_mut().zip(placed) {
            let mut indices = indices;
            indices.sort_unstable();
            role.approvals = indices.iter().map(|&i| people[i].clone()).collect();
            if role.approvals.iter().any(|a| a == person) {
                group.clone_from(&role.group);
            }
        }
        group
    }

    /// Places approver `i` in a group with room, moving others along (augmenting path).
    fn place(
        &self,
        i: usize,
        people: &[String],
        placed: &mut [Vec<usize>],
        seen: &mut [bool],
    ) -> bool {
        for r in 0..self.roles.len() {
            if seen[r] || !self.roles[r].eligible.contains(&people[i]) {
                continue;
            }
            seen[r] = true;
            if placed[r].len() < self.roles[r].required {
                placed[r].push(i);
                return true;
            }
            for k in 0..placed[r].len() {
                let j = placed[r][k];
                if self.place(j, people, placed, seen) {
                    placed[r][k] = i;
                    return true;
                }
            }
        }
        false
    }

    /// Voids every decision and opens the request again.
    fn reopen(&mut self, request: u64, material: Map<String, Json>) {
        self.approvals.clear();
        self.rejections.clear();
        for r in &mut self.roles {
            r.approvals.clear();
        }
        self.open = true;
        self.granted = false;
        self.request = request;
        self.material = material;
    }
}

impl Engine {
    /// The material fields' values in this step's event; fields it lacks are left out.
    fn material_values(
        &self,
        spec: &ApprovalSpec,
        owner: &Owner<'_>,
        step: &Step<'_>,
    ) -> Map<String, Json> {
        let mut values = Map::new();
        if step.event.is_none() {
            return values;
        }
        for (path, program) in &spec.material {
            if let Ok(v) = self.eval(program, owner, step, &[]) {
                values.insert(path.clone(), v.to_json());
            }
        }
        values
    }

    fn required(
        &self,
        quorum: &Quorum,
        eligible: usize,
        owner: &Owner<'_>,
        step: &Step<'_>,
        extra: &[(&'static str, Value)],
    ) -> Result<usize, String> {
        Ok(match quorum {
            Quorum::Count(p) => match self.eval(p, owner, step, extra)? {
                Value::Int(i) => {
                    usize::try_from(i).map_err(|_| format!("quorum `{i}` is negative"))?
                }
                Value::Uint(u) => usize::try_from(u).unwrap_or(usize::MAX),
                v => return Err(format!("quorum is `{}`, not an int", v.type_name())),
            },
            Quorum::All => eligible,
            Quorum::Majority => eligible / 2 + 1,
            Quorum::Percent(p) => (eligible * *p as usize).div_ceil(100),
        }
        .max(1))
    }

    /// Removes the pending expiry timers of an instance's approval.
    fn cancel_expiry(&mut self, w: usize, key: &Arc<str>) {
        let timers = self.timers_of(w, key, |k| matches!(k, TimerKind::ApprovalExpiry { .. }));
        for (due, id) in timers {
            self.remove_timer(Some(due), id);
        }
    }

    fn arm_expiry(&mut self, w: usize, key: &Arc<str>, spec: &ApprovalSpec, step: &Step<'_>) {
        let request = self
            .world
            .instances
            .get(&(w, key.clone()))
            .map_or(0, |i| i.step);
        if let Some(within) = &spec.within {
            let due = self.due(step.now, within);
            self.add_timer(
                due,
                TimerKind::ApprovalExpiry {
                    workflow: w,
                    key: key.clone(),
                    request,
                },
            );
        }
    }

    pub(super) fn request_approval(
        &mut self,
        w: usize,
        key: &Arc<str>,
        spec: &ApprovalSpec,
        step: &Step<'_>,
        extra: &[(&'static str, Value)],
        out: &mut Vec<Decision>,
    ) -> Result<(), String> {
        let owner = Owner::Instance(w, key);
        let mut excluded: Vec<String> = Vec::new();
        for p in &spec.excluding {
            match self.eval(p, &owner, step, extra)? {
                Value::List(items) => excluded.extend(items.iter().filter_map(value_key)),
                Value::Null => {}
                v => excluded.extend(value_key(&v)),
            }
        }
        let mut roles = Vec::new();
        for (group, quorum) in &spec.roles {
            let members = self.rules.groups.get(group).cloned().unwrap_or_default();
            let eligible: Vec<String> = members
                .into_iter()
                .filter(|m| !excluded.contains(m))
                .collect();
            let required = self.required(quorum, eligible.len(), &owner, step, extra)?;
            roles.push(ApprovalRole {
                group: group.clone(),
                eligible,
                required,
                approvals: Vec::new(),
            });
        }
        let material = self.material_values(spec, &owner, step);
        let hash = material_hash(&material);
        let ik = (w, key.clone());
        let request = self.world.instances.get(&ik).map_or(0, |i| i.step);
        let approval = Approval {
            roles,
            excluded: excluded.clone(),
            approvals: Vec::new(),
            rejections: Vec::new(),
            veto: spec.veto,
            delegations: Vec::new(),
            open: true,
            granted: false,
            request,
            spec: spec.index,
            material: material.clone(),
        };
        let mut d = self.base(&owner, step, Kind::Approval);
        d.outcome = Some("requested".to_string());
        let mut args = match approval.roles.as_slice() {
            [one] => {
                d.message = Some(format!(
                    "{} of {} eligible in `{}`",
                    one.required,
                    one.eligible.len(),
                    one.group
                ));
                serde_json::json!({"group": one.group, "required": one.required,
                    "eligible": one.eligible, "excluded": excluded})
            }
            roles => {
                d.message = Some(
                    roles
                        .iter()
                        .map(|r| {
                            format!(
                                "{} of {} eligible in `{}`",
                                r.required,
                                r.eligible.len(),
                                r.group
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                serde_json::json!({
                    "roles": roles.iter().map(|r| serde_json::json!({
                        "group": r.group, "required": r.required, "eligible": r.eligible,
                    })).collect::<Vec<_>>(),
                    "excluded": excluded,
                })
            }
        };
        if spec.veto != 1 {
            args["veto"] = Json::from(spec.veto);
        }
        if !spec.material.is_empty() {
            args["material"] = Json::Object(material);
        }
        args["sha256"] = Json::String(hash);
        d.args = Some(args);
        let short: Vec<(String, usize, usize)> = approval
            .roles
            .iter()
            .filter(|r| r.required > r.eligible.len())
            .map(|r| (r.group.clone(), r.required, r.eligible.len()))
            .collect();
        self.cancel_expiry(w, key);
        if let Some(inst) = self.world.instances.get_mut(&ik) {
            inst.approval = Some(approval);
        }
        self.mark(&ik);
        self.decide(d, out);
        for (group, required, n) in short {
            self.error(
                &owner,
                step,
                format!("quorum {required} exceeds the {n} eligible approvers of `{group}`"),
                out,
            );
        }
        self.arm_expiry(w, key, spec, step);
        Ok(())
    }

    fn open_approval(&self, w: usize, key: &Arc<str>) -> Option<Approval> {
        self.world
            .instances
            .get(&(w, key.clone()))
            .and_then(|i| i.approval.clone())
            .filter(|a| a.open)
    }

    fn update_approval(&mut self, w: usize, key: &Arc<str>, approval: Approval) {
        let ik = (w, key.clone());
        if let Some(inst) = self.world.instances.get_mut(&ik) {
            inst.approval = Some(approval);
        }
        self.mark(&ik);
    }

    /// An `approval.decided` event for the instance.
    pub(super) fn approval_decision(
        &mut self,
        w: usize,
        key: &Arc<str>,
        step: &mut Step<'_>,
        out: &mut Vec<Decision>,
    ) {
        let Some(mut approval) = self.open_approval(w, key) else {
            return;
        };
        let Some(event) = step.event else { return };
        let data = event.data.as_ref();
        let approver = data
            .and_then(|d| d.get("approver"))
            .and_then(Json::as_str)
            .map(str::to_string);
        let verdict = data
            .and_then(|d| d.get("decision"))
            .and_then(Json::as_str)
            .map(str::to_ascii_lowercase);
        let owner = Owner::Instance(w, key);
        let hash = material_hash(&approval.material);
        let mut d = self.base(&owner, step, Kind::Approval);
        d.approver = approver.clone();
        let (Some(approver), Some(verdict)) = (approver, verdict) else {
            d.outcome = Some("refused".to_string());
            d.message = Some("decision without `data.approver` and `data.decision`".to_string());
            self.decide(d, out);
            return;
        };
        let approve = matches!(verdict.as_str(), "approve" | "approved" | "granted");
        let reject = matches!(verdict.as_str(), "reject" | "rejected" | "denied");
        // Whom the decision counts for: the approver, or the one who delegated to them.
        let delegator = if approval.is_eligible(&approver) && !approval.has_decided(&approver) {
            None
        } else {
            approval
                .delegations
                .iter()
                .find(|(from, to)| *to == approver && !approval.has_decided(from))
                .map(|(from, _)| from.clone())
        };
        let person = delegator.clone().unwrap_or_else(|| approver.clone());
        let refusal = if approval.excluded.contains(&approver) {
            Some(format!("`{approver}` may not decide: separation of duties"))
        } else if delegator.is_none() && !approval.is_eligible(&approver) {
            Some(format!("`{approver}` is not in {}", approval.groups()))
        } else if approval.approvals.contains(&person) {
            Some(format!("`{person}` already approved"))
        } else if approval.rejections.contains(&person) {
            Some(format!("`{person}` already rejected"))
        } else if !approve && !reject {
            Some(format!("unknown decision `{verdict}`"))
        } else {
            None
        };
        if let Some(reason) = refusal {
            d.outcome = Some("refused".to_string());
            d.message = Some(reason);
            d.args = Some(serde_json::json!({"sha256": hash}));
            self.decide(d, out);
            return;
        }
        let mut args = serde_json::json!({"sha256": hash});
        if let Some(from) = &delegator {
            args["for"] = Json::String(from.clone());
        }
        let outcome = if reject {
            approval.rejections.push(person.clone());
            d.outcome = Some("rejected".to_string());
            if approval.veto > 1 {
                d.message = Some(format!(
                    "{} of {} rejections",
                    approval.rejections.len(),
                    approval.veto
                ));
            }
            let vetoed = approval.rejections.len() >= approval.veto;
            self.update_approval(w, key, approval);
            d.args = Some(args);
            self.decide(d, out);
            vetoed.then_some(ApprovalOutcome::Rejected)
        } else {
            let group = approval.count_approval(&person);
            if approval.roles.len() > 1 {
                args["group"] = Json::String(group);
            }
            d.outcome = Some("approved".to_string());
            d.message = Some(approval.progress());
            let met = approval.met();
            self.update_approval(w, key, approval);
            d.args = Some(args);
            self.decide(d, out);
            met.then_some(ApprovalOutcome::Granted)
        };
        if let Some(outcome) = outcome {
            self.approval_outcome(w, key, outcome, step, out);
        }
    }

    /// An `approval.delegated` event: `data.from` lets `data.to` decide for them.
    pub(super) fn approval_delegation(
        &mut self,
        w: usize,
        key: &Arc<str>,
        step: &mut Step<'_>,
        out: &mut Vec<Decision>,
    ) {
        let Some(mut approval) = self.open_approval(w, key) else {
            return;
        };
        let Some(event) = step.event else { return };
        let data = event.data.as_ref();
        let field = |name: &str| {
            data.and_then(|d| d.get(name))
                .and_then(Json::as_str)
                .map(str::to_string)
        };
        let (from, to) = (field("from"), field("to"));
        let owner = Owner::Instance(w, key);
        let mut d = self.base(&owner, step, Kind::Approval);
        d.approver = from.clone();
        let hash = material_hash(&approval.material);
        let (Some(from), Some(to)) = (from, to) else {
            d.outcome = Some("refused".to_string());
            d.message = Some("delegation without `data.from` and `data.to`".to_string());
            self.decide(d, out);
            return;
        };
        d.args = Some(serde_json::json!({"from": from, "to": to, "sha256": hash}));
        let refusal = if approval.excluded.contains(&from) {
            Some(format!("`{from}` may not decide: separation of duties"))
        } else if approval.excluded.contains(&to) {
            Some(format!(
                "`{to}` may not decide: separation of duties, so cannot be delegated to"
            ))
        } else if !approval.is_eligible(&from) {
            Some(format!("`{from}` is not in {}", approval.groups()))
        } else if approval.has_decided(&from) {
            Some(format!("`{from}` already decided"))
        } else if from == to {
            Some(format!("`{from}` cannot delegate to themselves"))
        } else if let Some((_, other)) = approval.delegations.iter().find(|(f, _)| *f == from) {
            Some(format!("`{from}` already delegated to `{other}`"))
        } else {
            None
        };
        if let Some(reason) = refusal {
            d.outcome = Some("refused".to_string());
            d.message = Some(reason);
            self.decide(d, out);
            return;
        }
        d.outcome = Some("delegated".to_string());
        d.message = Some(format!("`{to}` decides for `{from}`"));
        approval.delegations.push((from, to));
        self.update_approval(w, key, approval);
        self.decide(d, out);
    }

    /// Any other event for the instance: when it carries a material field whose value
    /// differs from the one being approved, every decision is void and the approval
    /// is requested again (the state's `on approval reopened` runs). A field the
    /// request's snapshot lacks is taken from the first event that has it.
    pub(super) fn material_check(
        &mut self,
        w: usize,
        key: &Arc<str>,
        step: &mut Step<'_>,
        out: &mut Vec<Decision>,
    ) {
        let ik = (w, key.clone());
        let Some(approval) = self
            .world
            .instances
            .get(&ik)
            .and_then(|i| i.approval.as_ref())
            .filter(|a| a.open || a.granted)
        else {
            return;
        };
        let rules = self.rules.clone();
        let Some(spec) = rules.workflows[w].approvals.get(approval.spec) else {
            return;
        };
        if spec.material.is_empty() {
            return;
        }
        let owner = Owner::Instance(w, key);
        let now = self.material_values(spec, &owner, step);
        let mut current = approval.material.clone();
        let previous = material_hash(&current);
        let mut changed = Vec::new();
        let mut added = false;
        for (path, value) in now {
            match current.get(&path) {
                Some(old) if *old == value => {}
                Some(_) => {
                    changed.push(path.clone());
                    current.insert(path, value);
                }
                None => {
                    added = true;
                    current.insert(path, value);
                }
            }
        }
        if changed.is_empty() {
            if added
                && let Some(a) = self
                    .world
                    .instances
                    .get_mut(&ik)
                    .and_then(|i| i.approval.as_mut())
            {
                a.material = current;
                self.mark(&ik);
            }
            return;
        }
        let was_granted = approval.granted;
        let request = self.world.instances.get(&ik).map_or(0, |i| i.step);
        let hash = material_hash(&current);
        if let Some(a) = self
            .world
            .instances
            .get_mut(&ik)
            .and_then(|i| i.approval.as_mut())
        {
            a.reopen(request, current.clone());
        }
        self.mark(&ik);
        self.cancel_expiry(w, key);
        let mut d = self.base(&owner, step, Kind::Approval);
        d.outcome = Some("reopened".to_string());
        d.message = Some(format!(
            "material change after {}: {}; prior decisions are void",
            if was_granted {
                "approval"
            } else {
                "the request"
            },
            changed.join(", ")
        ));
        d.args = Some(serde_json::json!({
            "changed": changed,
            "material": current,
            "previous_sha256": previous,
            "sha256": hash,
        }));
        self.decide(d, out);
        self.arm_expiry(w, key, spec, step);
        let Some(state) = self.world.instances.get(&ik).map(|i| i.state) else {
            return;
        };
        if let Some((_, t)) = rules.workflows[w].states[state]
            .on_approval
            .iter()
            .find(|(o, _)| *o == ApprovalOutcome::Reopened)
        {
            self.take(w, key, t, step, out);
        }
    }

    pub(super) fn approval_outcome(
        &mut self,
        w: usize,
        key: &Arc<str>,
        outcome: ApprovalOutcome,
        step: &mut Step<'_>,
        out: &mut Vec<Decision>,
    ) {
        let ik = (w, key.clone());
        let mut hash = None;
        if let Some(a) = self
            .world
            .instances
            .get_mut(&ik)
            .and_then(|i| i.approval.as_mut())
        {
            a.open = false;
            a.granted = outcome == ApprovalOutcome::Granted;
            hash = Some(material_hash(&a.material));
        }
        self.mark(&ik);
        let mut d = self.base(&Owner::Instance(w, key), step, Kind::Approval);
        d.outcome = Some(
            match outcome {
                ApprovalOutcome::Granted => "granted",
                ApprovalOutcome::Rejected => "vetoed",
                ApprovalOutcome::Expired => "expired",
                ApprovalOutcome::Reopened => "reopened",
            }
            .to_string(),
        );
        d.args = hash.map(|h| serde_json::json!({"sha256": h}));
        self.decide(d, out);
        let rules = self.rules.clone();
        let Some(state) = self.world.instances.get(&ik).map(|i| i.state) else {
            return;
        };
        if let Some((_, t)) = rules.workflows[w].states[state]
            .on_approval
            .iter()
            .find(|(o, _)| *o == outcome)
        {
            self.take(w, key, t, step, out);
        }
    }
}
