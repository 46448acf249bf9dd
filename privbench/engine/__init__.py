"""The engine: membership game (splits), training, the workspace store and the audit itself."""

from privbench.engine.audit import Audit, AuditSpec, PluginChoice, RunResult
from privbench.engine.store import Workspace

__all__ = ["Audit", "AuditSpec", "PluginChoice", "RunResult", "Workspace"]
