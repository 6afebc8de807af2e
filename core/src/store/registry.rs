//! The gate registry: which gates are in force, rebuilt from the log when the store opens and
//! changed only by the writer as it applies registrations and removals.
//!
//! Gates come from the log (`GateRegistered` and `GateRemoved` events in `$system`, entity
//! `gates`) and, for an embedding program, from [`super::Config::gates`]. A definition in force
//! that this build cannot compile stops the open: a node that skipped it would enforce other
//! gates than its replicas. The settings that change what apply writes are rebuilt from the log
//! the same way (the last `SettingsChanged` event).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{
    GATE_EVENT_REGISTERED, GATE_EVENT_REMOVED, GATES_ENTITY, RustGate, SETTINGS_ENTITY, Shared,
    Store, reads,
};
use crate::command::{self, SYSTEM_SCOPE};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::gate::{Gate, GateDefinition};

/// A gate in force, as listed by [`Store::gates`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredGate {
    /// The gate's name.
    pub name: String,
    /// The position of the event that registered it; 0 for a gate from [`Config::gates`](crate::Config::gates).
    pub version: u64,
    /// The definition, for gates registered through the log.
    pub definition: Option<GateDefinition>,
}

/// A gate in force.
#[derive(Clone, Debug)]
pub(super) struct Installed {
    pub(super) version: u64,
    pub(super) scopes: Vec<String>,
    pub(super) types: Vec<String>,
    pub(super) definition: Option<GateDefinition>,
    pub(super) gate: Arc<dyn Gate>,
}

impl Installed {
    pub(super) fn binds(&self, event: &Event) -> bool {
        (self.scopes.is_empty() || self.scopes.contains(&event.scope))
            && (self.types.is_empty() || self.types.contains(&event.event_type))
    }
}

/// Installs the gates of the embedding program, then replays the gate events of the log.
///
/// Every definition was checked by the writer when it was registered. A definition in force
/// that this build cannot compile (a newer rule, a stricter bound after an upgrade) stops the
/// open with [`Error::Incompatible`]: skipping it would make this node enforce a different set
/// of gates than replicas running another build. Definitions that were later replaced or
/// removed are not compiled.
pub(super) fn load_gates(shared: &Shared, rust_gates: &[RustGate]) -> Result<()> {
    let mut gates = shared.gates.write().expect("gate set lock poisoned");
    for rust_gate in rust_gates {
        let installed = Installed {
            version: 0,
            scopes: rust_gate.scopes.clone(),
            types: rust_gate.types.clone(),
            definition: None,
            gate: rust_gate.gate.clone(),
        };
        if gates.insert(rust_gate.name.clone(), installed).is_some() {
            return Err(Error::InvalidInput(format!(
                "two gates in Config::gates are named {:?}",
                rust_gate.name
            )));
        }
    }
    let index = shared.index.read().expect("index lock poisoned");
    let Some(state) = index.entity(SYSTEM_SCOPE, GATES_ENTITY) else {
        return Ok(());
    };
    let mut in_force: BTreeMap<String, (u64, GateDefinition)> = BTreeMap::new();
    for &position in &state.positions {
        let event = reads::read_at(shared, position, index.loc(position))?;
        let incompatible = |detail: String| Error::Incompatible { position, detail };
        match event.event_type.as_str() {
            GATE_EVENT_REGISTERED => {
                let definition = definition_of(&event)
                    .ok_or_else(|| incompatible("a gate definition does not parse".to_string()))?;
                in_force.insert(definition.name.clone(), (position, definition));
            }
            GATE_EVENT_REMOVED => {
                let name = removed_name(&event)
                    .ok_or_else(|| incompatible("a gate removal does not parse".to_string()))?;
                in_force.remove(&name);
            }
            other => {
                return Err(incompatible(format!(
                    "an event of type {:?} in the gate history",
                    command::short(other)
                )));
            }
        }
    }
    for (name, (position, definition)) in in_force {
        let gate = definition.compile().map_err(|err| Error::Incompatible {
            position,
            detail: format!("gate {name:?} does not compile in this build: {err}"),
        })?;
        if gates.contains_key(&name) {
            return Err(Error::Incompatible {
                position,
                detail: format!("gate {name:?} in the log has the name of a gate in Config::gates"),
            });
        }
        gates.insert(name, installed(position, definition, gate));
    }
    Ok(())
}

/// Replays the settings of the log: the last `SettingsChanged` event's.
pub(super) fn load_settings(shared: &Shared) -> Result<()> {
    let index = shared.index.read().expect("index lock poisoned");
    let Some(&position) = index
        .entity(SYSTEM_SCOPE, SETTINGS_ENTITY)
        .and_then(|state| state.positions.last())
    else {
        return Ok(());
    };
    let event = reads::read_at(shared, position, index.loc(position))?;
    let settings = serde_json::from_slice(&event.payload).map_err(|err| Error::Incompatible {
        position,
        detail: format!("settings do not parse: {err}"),
    })?;
    *shared.settings.write().expect("settings lock poisoned") = settings;
    Ok(())
}

/// A registered gate as the gate set holds it.
pub(super) fn installed(
    position: u64,
    definition: GateDefinition,
    gate: Arc<dyn Gate>,
) -> Installed {
    Installed {
        version: position,
        scopes: definition.scopes.clone(),
        types: definition.types.clone(),
        definition: Some(definition),
        gate,
    }
}

/// Compiled gates kept for the writer (see `Shared::compiled`): registrations in flight at
/// once, beyond which the writer compiles again.
pub(super) const COMPILED_WAITING_MAX: usize = 64;

/// Gates compiled ahead of the writer, with the definitions they were compiled from.
pub(super) type Compiled = Mutex<Vec<(GateDefinition, Arc<dyn Gate>)>>;

impl Store {
    /// Whether any gate registered through the log is in force.
    pub fn has_gates(&self) -> bool {
        self.shared.has_gates()
    }

    /// The gates in force, by name.
    pub fn gates(&self) -> Vec<RegisteredGate> {
        let gates = self.shared.gates.read().expect("gate set lock poisoned");
        gates
            .iter()
            .map(|(name, installed)| RegisteredGate {
                name: name.clone(),
                version: installed.version,
                definition: installed.definition.clone(),
            })
            .collect()
    }
}

impl Shared {
    /// Whether any gate registered through the log is in force.
    pub(super) fn has_gates(&self) -> bool {
        !self
            .gates
            .read()
            .expect("gate set lock poisoned")
            .is_empty()
    }

    /// The gate [`Store::register_gate`] compiled from `definition`, if it is still waiting. A
    /// gate compiled from an equal definition is the same gate, so the answer does not depend on
    /// whether it is found.
    pub(super) fn take_compiled(&self, definition: &GateDefinition) -> Option<Arc<dyn Gate>> {
        let mut compiled = self.compiled.lock().expect("compiled lock poisoned");
        let found = compiled.iter().position(|(other, _)| other == definition)?;
        Some(compiled.remove(found).1)
    }
}

/// Parses a gate definition event's payload.
fn definition_of(event: &Event) -> Option<GateDefinition> {
    serde_json::from_slice(&event.payload).ok()
}

/// The name a gate removal event removes.
fn removed_name(event: &Event) -> Option<String> {
    let removal: serde_json::Value = serde_json::from_slice(&event.payload).ok()?;
    removal.get("name")?.as_str().map(str::to_string)
}
