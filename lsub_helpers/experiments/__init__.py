"""The experiments of Section 4: running anchors (``runner``), their records (``records``) and Table 1 /
Figure 3 from the records (``report``).  The public names of the three modules are importable from here."""

from .records import (KNOWN_SCHEMAS, SCHEMA_VERSION, AnchorRecord, DistanceRecord, PlainAttackRecord, Provenance,
                      RecordStatus, RunRecord, SchemaError, StepRecord, SubstituteRecord, Timings, append_record,
                      as_records, code_commit, load_records, read_records, repair, run_metadata)
from .report import (ROW_GROUPS, attack_comparison, attack_comparison_markdown, attack_findings, closer_points_markdown,
                     conclusions_markdown, findings_markdown, paper_table1, per_anchor_markdown, records_summary_markdown,
                     row_group_findings, row_group_markdown,
                     row_group_summary, runtime_points, side_by_side_markdown, side_by_side_quality_markdown,
                     side_by_side_speed_markdown, side_by_side_tables_markdown, table1, table1_markdown,
                     table1_quality_markdown, table1_speed_markdown, table1_tables_markdown)
from .runner import (ExperimentConfig, Job, anchor_record, checkpoint_dir, load_anchor_data, run_anchor, run_experiment, run_jobs, sample_anchors,
                     select_anchors)

__all__ = ["SCHEMA_VERSION", "KNOWN_SCHEMAS", "SchemaError", "RecordStatus", "AnchorRecord", "DistanceRecord",
           "RunRecord", "StepRecord", "SubstituteRecord", "PlainAttackRecord", "Timings", "Provenance", "as_records",
           "checkpoint_dir", "read_records", "append_record", "code_commit", "load_records", "repair", "run_metadata", "ROW_GROUPS",
           "attack_comparison", "attack_comparison_markdown", "attack_findings", "closer_points_markdown", "conclusions_markdown", "findings_markdown", "paper_table1", "per_anchor_markdown", "records_summary_markdown", "row_group_findings", "row_group_markdown", "row_group_summary",
           "runtime_points", "side_by_side_markdown", "side_by_side_quality_markdown", "side_by_side_speed_markdown",
           "side_by_side_tables_markdown", "table1", "table1_markdown", "table1_quality_markdown",
           "table1_speed_markdown", "table1_tables_markdown", "ExperimentConfig", "Job", "anchor_record", "load_anchor_data", "run_anchor",
           "run_experiment", "run_jobs", "sample_anchors", "select_anchors"]
