//! WorkflowTemplates: each namespace's workflow catalogue (hot reload) and each template's `Valid` status.
//!
//! One check decides whether a template is usable, [`check`]: the workflow crate's static checks (the engine's
//! compile without an object, CEL variables, target kind) plus its place among the built-ins (`overrides`,
//! `disabled`). The admission webhook ([`crate::webhook`]), the `Valid` condition written here and
//! `sei-operator workflow validate` all call it, so they cannot disagree.
//!
//! Hot reload: [`watch`] keeps a reflector of the templates; after every change it rebuilds the catalogue of
//! that namespace ([`Catalogs`]) from its valid templates. Plans created afterwards use the new catalogue; a
//! running plan is unaffected, because a plan carries its compiled tasks and the digest of the definition it
//! was compiled from (`status.plan.digest`), and drift detection ignores a plan whose digest is no longer the
//! workflow's. An invalid template is left out of the catalogue (and says why on its `Valid` condition):
//! it never blocks another template or a plan.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use futures::StreamExt as _;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Resource as _, ResourceExt as _};
use sei_crds::conditions::{ConditionStatus, new_condition, set_condition};
use sei_crds::{REASON_COMPILED, REASON_INVALID, VALID, WorkflowTemplate, WorkflowTemplateStatus};
use sei_engine::{TaskTypeRegistry, WorkflowDefinition};
use sei_workflows::{Catalog, Template, Workflow};

/// The base catalogue (built-ins and `--workflows-dir` files) and each namespace's, with its templates.
#[derive(Debug)]
pub struct Catalogs {
    base: Arc<Catalog>,
    by_namespace: RwLock<HashMap<String, Arc<Catalog>>>,
    /// Bumped at every reload, so controllers can look at every object again ([`Catalogs::reloads`]).
    reloaded: tokio::sync::watch::Sender<u64>,
}

impl Catalogs {
    /// Catalogues that start as `base` in every namespace.
    pub fn new(base: Catalog) -> Self {
        Self {
            base: Arc::new(base),
            by_namespace: RwLock::default(),
            reloaded: tokio::sync::watch::Sender::new(0),
        }
    }

    /// One item after every reload of a namespace's catalogue (for `Controller::reconcile_all_on`): an idle
    /// object whose workflow a new template triggers, or that a disabled built-in no longer does, is looked at
    /// again at once.
    pub fn reloads(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.reloaded.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }

    /// The built-ins and `--workflows-dir` files.
    pub fn base(&self) -> &Catalog {
        &self.base
    }

    /// The catalogue of `namespace`: the base with that namespace's valid templates.
    pub fn get(&self, namespace: &str) -> Arc<Catalog> {
        self.by_namespace
            .read()
            .ok()
            .and_then(|m| m.get(namespace).cloned())
            .unwrap_or_else(|| Arc::clone(&self.base))
    }

    fn set(&self, namespace: &str, catalog: Option<Catalog>) {
        if let Ok(mut m) = self.by_namespace.write() {
            match catalog {
                Some(c) => m.insert(namespace.to_owned(), Arc::new(c)),
                None => m.remove(namespace),
            };
        }
        self.reloaded.send_modify(|n| *n += 1);
    }
}

/// Where a template's errors point: `WorkflowTemplate <namespace>/<name>`.
pub fn source_name(obj: &WorkflowTemplate) -> String {
    format!(
        "WorkflowTemplate {}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// A WorkflowTemplate object as a [`Template`] (its CEL parsed).
pub fn template(obj: &WorkflowTemplate) -> Result<Template, sei_workflows::Error> {
    let mut definition = WorkflowDefinition::new(obj.name_any(), obj.spec.workflow.clone());
    definition.source = source_name(obj);
    Ok(Template {
        workflow: Workflow::from_definition(definition)?,
        priority: obj.spec.priority,
        overrides: obj.spec.overrides.clone(),
        disabled: obj.spec.disabled,
    })
}

/// The one check of a template (admission, `Valid`, `workflow validate`): the template and its plan skeleton
/// (`None` when it disables a built-in), or the compiler's message naming the task and field.
pub fn check(
    obj: &WorkflowTemplate,
    base: &Catalog,
    registry: &(impl TaskTypeRegistry + ?Sized),
) -> Result<(Template, Option<sei_engine::Plan>), sei_workflows::Error> {
    let template = template(obj)?;
    let skeleton = template.check(base, registry)?;
    Ok((template, skeleton))
}

/// The status a template should have.
fn desired_status(
    obj: &WorkflowTemplate,
    outcome: &Result<(Template, Option<sei_engine::Plan>), sei_workflows::Error>,
) -> WorkflowTemplateStatus {
    let generation = obj.metadata.generation;
    let mut status = obj.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let now = crate::clock::now_time();
    let condition = match outcome {
        Ok((template, skeleton)) => {
            status.digest = Some(template.workflow.digest());
            status.task_count = skeleton
                .as_ref()
                .and_then(|p| u32::try_from(p.tasks.len() + p.finally.len()).ok());
            let message = if template.disabled {
                format!(
                    "disables the built-in workflow `{}` in this namespace",
                    template.overrides.as_deref().unwrap_or_default()
                )
            } else {
                "the workflow compiles without an object; plans created from now on use this generation"
                    .into()
            };
            new_condition(
                VALID,
                ConditionStatus::True,
                REASON_COMPILED,
                message,
                generation,
                now,
            )
        }
        Err(e) => {
            status.digest = None;
            status.task_count = None;
            new_condition(
                VALID,
                ConditionStatus::False,
                REASON_INVALID,
                e.to_string(),
                generation,
                now,
            )
        }
    };
    set_condition(&mut status.conditions, condition);
    status
}

/// Rebuilds the catalogue of `namespace` from the templates in `store`, and writes each template's status
/// when it changed.
async fn refresh(
    namespace: &str,
    store: &Store<WorkflowTemplate>,
    catalogs: &Catalogs,
    registry: &(impl TaskTypeRegistry + ?Sized + Sync),
    client: &kube::Client,
) {
    let mut objects: Vec<Arc<WorkflowTemplate>> = store
        .state()
        .into_iter()
        .filter(|t| t.namespace().as_deref() == Some(namespace) && t.meta().deletion_timestamp.is_none())
        .collect();
    objects.sort_by_key(|t| t.name_any());
    let mut valid = Vec::new();
    let api: Api<WorkflowTemplate> = Api::namespaced(client.clone(), namespace);
    for obj in objects {
        let outcome = check(&obj, catalogs.base(), registry);
        let status = desired_status(&obj, &outcome);
        if let Ok((template, _)) = outcome {
            valid.push(template);
        }
        if obj.status.as_ref() != Some(&status) {
            // A replace (not a merge patch): a digest cleared by an invalid edit must go. A conflict means a
            // newer version, whose own event refreshes the namespace again.
            let mut desired = (*obj).clone();
            desired.status = Some(status);
            if let Err(e) = api
                .replace_status(&obj.name_any(), &kube::api::PostParams::default(), &desired)
                .await
            {
                tracing::debug!(error = &e as &dyn std::error::Error, template = %obj.name_any(), "Writing a template's status failed");
            }
        }
    }
    let count = valid.len();
    catalogs.set(
        namespace,
        (!valid.is_empty()).then(|| Catalog::compose(catalogs.base(), &valid)),
    );
    tracing::info!(namespace, templates = count, "Workflow catalogue reloaded");
}

/// Watches WorkflowTemplates (all namespaces, or `namespace`) and keeps `catalogs` and their statuses up to
/// date until `shutdown`. `synced` is called once the first full list has been applied, so controllers that
/// start plans can wait for it (a restart never starts a built-in a template overrides).
pub async fn watch(
    api: Api<WorkflowTemplate>,
    ctx: Arc<crate::context::Context>,
    synced: tokio::sync::oneshot::Sender<()>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let catalogs = &ctx.catalogs;
    let (store, writer) = reflector::store();
    let mut events = std::pin::pin!(
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff()
    );
    let mut synced = Some(synced);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut pending: BTreeSet<String> = BTreeSet::new();
    let mut listing = false;
    loop {
        let event = tokio::select! {
            () = &mut shutdown => return,
            event = events.next() => event,
        };
        let Some(event) = event else { return };
        match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj) | watcher::Event::InitApply(obj)) => {
                pending.insert(obj.namespace().unwrap_or_default());
            }
            Ok(watcher::Event::Init) => listing = true,
            Ok(watcher::Event::InitDone) => {
                listing = false;
                // Namespaces that had templates and now have none go back to the base catalogue.
                let known: Vec<String> = catalogs
                    .by_namespace
                    .read()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                pending.extend(known);
            }
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "Watching WorkflowTemplates failed; retrying"
                );
            }
        }
        if listing {
            continue;
        }
        for namespace in std::mem::take(&mut pending) {
            refresh(&namespace, &store, catalogs, &ctx.registry, &ctx.client).await;
        }
        if let Some(tx) = synced.take() {
            let _ = tx.send(());
        }
    }
}
