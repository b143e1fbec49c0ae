"""Page labels in Chinese and English (``?lang=zh|en``, remembered in a cookie).

A page never shows a raw code (a share type, an update cycle, a status, a check's rule kind): it shows
:func:`code`'s label for it. The code sets come from the modules that define them, so a code added
there without a label here fails tests/test_portal_finished.py.
"""

from __future__ import annotations

import re

from lakehouse.ledger import LOAD_OUTCOMES
from schemas.model import RULE_KINDS, SEVERITIES, SHARE_TYPES, UPDATE_CYCLES
from sharing.disputes import DISPUTE_STATUSES
from sharing.requests import REQUEST_STATUSES

KPI_LABELS = {
    "sharing_rate": ("数据共享率", "Sharing rate"),
    "usage_rate": ("共享利用率", "Usage rate"),
    "reuse_factor": ("一源多用（平均使用部门数）", "Reuse factor (consumers per source)"),
    "duplicate_collection_rate": ("重复采集率", "Duplicate collection rate"),
    "request_fulfilment_rate": ("需求响应率", "Request fulfilment rate"),
    "interconnection_rate": ("互联互通率", "Interconnection rate"),
    "quality_pass_rate": ("质量检查通过率", "Quality pass rate"),
    "timeliness": ("数据及时率", "Timeliness"),
    "consistency_rate": ("多元校核一致率", "Consistency rate"),
    "approval_rate": ("申请批准率", "Approval rate"),
}

LABELS = {
    "zh": {
        "title": "OneSource 数据共享考核", "sign_in": "登录", "sign_out": "退出", "user": "用户名", "password": "密码",
        "bad_login": "用户名或密码错误", "locked": "登录失败次数过多，请 {minutes} 分钟后再试",
        "period": "考核期", "city": "全市", "target": "目标", "ranking": "部门排名（数据共享率）",
        "trends": "趋势", "department": "部门", "datasets": "数据资源", "why": "未计入共享的原因", "status": "状态",
        "consumers": "使用部门数", "last_load": "最近加载", "duplicates": "重复采集矩阵", "export": "导出",
        "quality_timeliness": "质量与及时性", "shared": "已共享", "not_counted": "未计入", "authority": "权威来源",
        "collects": "重复采集的数据元", "should_consume": "应引用的权威数据集", "back": "返回总览",
        "empty": "尚未发布任何考核指标：运行 onesource_metrics DAG 或 onesource metrics --publish。",
        "matrix_note": "绿色：部门是该数据元的权威来源；红色：部门重复采集了其他部门负责的数据元。",
        "behind": "未达标", "on_target": "已达标", "no_data": "无数据", "of": "/", "language": "English",
        "simulated": "演示数据：本月之前的月份为模拟历史。",
        "prefill": "企业年报预填率",
        "prefill_detail": "每份年报 {fields} 项中 {per:.0f} 项由权威来源自动填写：{enterprises} 家企业共 {total} 项无需再填",
        "forms_prefill": "基层表单预填率", "form": "表单", "form_fields": "权威来源字段/字段",
        "form_subjects": "填报对象", "form_untyped": "无需再填的项",
        "forms_detail": "{forms} 张基层表单共 {cells} 项，其中 {total} 项由权威来源自动填写，无需再填",
        "catalogue": "数据目录", "requests": "申请与异议", "console": "SQL 查询", "dashboard": "考核看板",
        "search": "搜索", "all": "全部", "share_type": "共享类型", "cycle": "更新周期", "owner": "提供部门",
        "element": "数据元", "freshness": "时效", "fresh": "在更新周期内", "stale": "已过期", "readable": "可查询",
        "request_access": "申请使用", "purpose": "用途", "columns": "字段", "row_scope": "行范围（条件）",
        "days": "使用期限（天）", "submit": "提交", "sensitive": "敏感（脱敏）", "authority_of": "权威来源",
        "lineage": "血缘", "derived": "引用本数据集数据元的数据集", "quality": "最近一次质量检查", "passed": "通过",
        "failed": "未通过", "consumers_list": "使用部门", "disputes": "异议", "flag_record": "标记记录有误",
        "key_value": "记录主键值", "description": "问题说明", "my_requests": "本部门的申请",
        "to_decide": "待本部门审批", "overdue_all": "全市超期未办", "approve": "批准", "refuse": "拒绝",
        "revoke": "撤销", "reason": "理由", "due": "办理时限", "overdue": "已超期", "requested": "申请时间",
        "decided": "办结时间", "run": "执行", "download": "下载", "refused": "已拒绝", "rows": "行",
        "flagged": "有异议", "my_disputes": "本部门提出的异议", "disputes_to_resolve": "待本部门处理的异议",
        "corrected": "已在源头更正", "rejected": "驳回", "resolution": "处理说明", "owner_only": "仅数据提供部门的管理员可审批",
        "not_shared_note": "不予共享", "no_access": "本部门尚无权限",
        "definition": "指标定义", "members_link": "分子分母明细", "item": "对象", "numerator": "分子",
        "denominator": "分母", "note": "说明", "members_title": "指标明细：计入分子与分母的对象",
        "members_note": "每一行是一个数据集、系统、（部门，数据元）对、共享申请或副本字段，及其计入分子、分母的数量。",
        "definitions": "考核指标定义",
        "not_found": "页面不存在", "forbidden": "无权操作", "bad_request": "请求有误", "no_dataset": "数据目录中没有数据集 {name}",
        "no_department": "没有部门代码 {code}", "no_kpi": "没有指标 {kpi}", "no_page": "没有页面 {path}",
        "bad_period": "考核期 {period} 无效：可选 {first} 至 {last}（格式 YYYY-MM）",
        "no_periods": "考核期 {period} 无效：尚未发布任何考核期", "bad_filter": "筛选条件 {field}={value} 无效：没有这一项，请从下拉列表中选择", "bad_form": "表单内容无效：{detail}",
        "home": "返回数据目录", "row_count": "行数", "queryable": "可查询", "health": "数据状态",
        "h_ok": "正常：已发布且在更新周期内", "h_stale": "已过期：超出更新周期未更新", "h_bad": "最近一次加载未发布", "last_good": "查询的是上一份合格快照",
        "h_empty": "已发布但没有数据", "h_never": "尚未发布", "not_granted": "未授权",
        "granted": "已授权", "masked": "脱敏", "access": "本部门权限", "n_columns": "{n} 个字段", "preview": "数据预览（前 20 行，按本部门权限）",
        "preview_none": "本部门无权查询，或尚无数据", "schema_history": "结构版本历史", "version": "版本",
        "registered": "登记时间", "compatibility": "兼容模式", "changes": "变更", "first_version": "首个版本",
        "added": "新增字段", "removed": "删除字段", "changed": "变更字段", "key_changed": "主键变更",
        "quality_trend": "质量趋势（最近的检查）", "checks_summary": "{checks} 项检查，{blocking} 项阻断性未通过，{warnings} 项警告",
        "failing_checks": "未通过的检查", "pick_row": "选择记录", "pick_row_note": "在上面的预览中选择有误的记录",
        "key_masked_note": "主键对本部门脱敏：请在预览中选择记录", "description_none": "（无说明）",
        "row_filter": "限定行范围", "yes": "是", "no": "否", "failed_short": "失败", "row": "行",
        "request_done": "申请 {id}：{status}", "dispute_done": "异议 {id} 已记录，由 {owner} 核实",
        "no_row": "请选择一条记录或填写主键值", "row_gone": "预览中的这条记录已不存在，请刷新后重选",
        "row_ambiguous": "所选记录的可见字段对应 {n} 条记录，无法确定是哪一条；请填写主键值",
        "decided_notice": "申请 {id}：已{action}", "dispute_resolved": "异议 {id}：{action}",
        "approve_done": "批准", "refuse_done": "拒绝", "revoke_done": "撤销",
    },
    "en": {
        "title": "OneSource sharing KPIs", "sign_in": "Sign in", "sign_out": "Sign out", "user": "User",
        "password": "Password", "bad_login": "Wrong user or password",
        "locked": "Too many failed sign-ins; try again in {minutes} minutes", "period": "Period", "city": "City",
        "target": "target", "ranking": "Department ranking (sharing rate)", "trends": "Trends",
        "department": "Department", "datasets": "Datasets", "why": "Why not counted as shared", "status": "Status",
        "consumers": "Consumers", "last_load": "Last load", "duplicates": "Duplicate-collection matrix",
        "export": "Export", "quality_timeliness": "Quality and timeliness", "shared": "shared",
        "not_counted": "not counted", "authority": "Authority", "collects": "Elements it re-collects",
        "should_consume": "Authoritative dataset to consume", "back": "Back to overview",
        "empty": "No KPIs published yet: run the onesource_metrics DAG or `onesource metrics --publish`.",
        "matrix_note": "Green: the department is the element's authority; red: it re-collects another department's "
                       "element.",
        "behind": "behind target", "on_target": "on target", "no_data": "no data", "of": "/", "language": "中文",
        "simulated": "Demo data: months before this one are simulated history.",
        "prefill": "Enterprise annual report prefill rate",
        "prefill_detail": "{per:.0f} of the {fields} fields of each report filled from authoritative sources: "
                          "{total} fields {enterprises} enterprises no longer type",
        "forms_prefill": "Grassroots forms prefill rate", "form": "Form", "form_fields": "Fields from authorities",
        "form_subjects": "Subjects", "form_untyped": "Fields no longer typed",
        "forms_detail": "{forms} forms, {cells} fields in all: {total} filled from authoritative sources, no longer "
                        "typed",
        "catalogue": "Catalogue", "requests": "Requests & disputes", "console": "SQL console", "dashboard": "Dashboard",
        "search": "Search", "all": "all", "share_type": "Share type", "cycle": "Update cycle", "owner": "Provider",
        "element": "Data element", "freshness": "Freshness", "fresh": "within its cycle", "stale": "overdue",
        "readable": "Readable", "request_access": "Request access", "purpose": "Purpose", "columns": "Columns",
        "row_scope": "Row scope (condition)", "days": "Period (days)", "submit": "Submit",
        "sensitive": "sensitive (masked)", "authority_of": "Authoritative source", "lineage": "Lineage",
        "derived": "Datasets taking elements from this one", "quality": "Last quality check", "passed": "Passed",
        "failed": "Failed", "consumers_list": "Consumers", "disputes": "Disputes", "flag_record": "Flag a wrong record",
        "key_value": "Record key", "description": "What is wrong", "my_requests": "Our requests",
        "to_decide": "Requests to decide", "overdue_all": "Overdue requests, city-wide", "approve": "Approve",
        "refuse": "Refuse", "revoke": "Revoke", "reason": "Reason", "due": "Due", "overdue": "overdue",
        "requested": "Requested", "decided": "Decided", "run": "Run", "download": "Download", "refused": "Refused",
        "rows": "rows", "flagged": "disputed", "my_disputes": "Our disputes", "disputes_to_resolve": "Disputes to resolve",
        "corrected": "Corrected at the source", "rejected": "Reject", "resolution": "Resolution",
        "owner_only": "Only the providing department's owner role decides", "not_shared_note": "not shared",
        "no_access": "no access yet",
        "definition": "definition", "members_link": "datasets behind it", "item": "Item", "numerator": "Numerator",
        "denominator": "Denominator", "note": "Why", "members_title": "Behind the figure: numerator and denominator",
        "members_note": "One row per dataset, system, (department, element) pair, access request or copied column, "
                        "with what it adds to the numerator and to the denominator.",
        "definitions": "KPI definitions",
        "not_found": "Not found", "forbidden": "Not allowed", "bad_request": "Bad request", "no_dataset": "No dataset {name} in the catalogue",
        "no_department": "No department with code {code}", "no_kpi": "No KPI {kpi}", "no_page": "No page {path}",
        "bad_period": "Period {period} is not valid: choose one from {first} to {last} (as YYYY-MM)",
        "no_periods": "Period {period} is not valid: no period is published yet", "bad_filter": "Filter {field}={value} is not valid: there is no such value; pick one from the list", "bad_form": "The form is not valid: {detail}",
        "home": "Back to the catalogue", "row_count": "Rows", "queryable": "Queryable", "health": "Data status",
        "h_ok": "OK: up to date", "h_stale": "Stale: not updated within its cycle",
        "h_bad": "Last load not published", "last_good": "queries read the last good snapshot", "h_empty": "Published, but holds no rows", "h_never": "Never published",
        "not_granted": "not granted", "granted": "granted", "masked": "masked", "access": "Your access",
        "n_columns": "{n} columns",
        "preview": "Preview (first 20 rows, as your department reads them)",
        "preview_none": "Your department cannot query it, or it holds no data yet", "schema_history": "Schema history",
        "version": "Version", "registered": "Registered", "compatibility": "Compatibility", "changes": "Changes",
        "first_version": "first version", "added": "added", "removed": "removed", "changed": "changed",
        "key_changed": "key changed", "quality_trend": "Quality trend (latest checks)",
        "checks_summary": "{checks} checks, {blocking} blocking failed, {warnings} warnings",
        "failing_checks": "Failing checks", "pick_row": "Pick", "pick_row_note": "pick the wrong record in the preview above",
        "key_masked_note": "The key is masked for your department: pick the record in the preview",
        "description_none": "(no description)", "row_filter": "row scope limited", "yes": "yes", "no": "no",
        "failed_short": "Failed", "row": "row",
        "request_done": "Request {id}: {status}", "dispute_done": "Dispute {id} recorded; {owner} will verify it",
        "no_row": "Pick a record or give its key value", "row_gone": "That preview row is gone: reload the page and pick again",
        "row_ambiguous": "The picked record's visible values match {n} records: give its key value instead",
        "decided_notice": "Request {id}: {action} done", "dispute_resolved": "Dispute {id}: {action}",
        "approve_done": "approve", "refuse_done": "refuse", "revoke_done": "revoke",
    },
}


CODES: dict[str, tuple[str, ...]] = {
    "share_type": SHARE_TYPES, "cycle": tuple(UPDATE_CYCLES), "request_status": REQUEST_STATUSES,
    "dispute_status": DISPUTE_STATUSES, "load_status": LOAD_OUTCOMES, "check": tuple(RULE_KINDS),
    "severity": SEVERITIES,
}
"""Every code set a page shows, from the module that defines it."""

CODE_LABELS: dict[str, dict[str, tuple[str, str]]] = {
    "share_type": {"unconditional": ("无条件共享", "Unconditional"), "conditional": ("有条件共享", "Conditional"),
                   "not_shared": ("不予共享", "Not shared")},
    "cycle": {"hourly": ("每小时", "Hourly"), "daily": ("每日", "Daily"), "weekly": ("每周", "Weekly"),
              "monthly": ("每月", "Monthly"), "quarterly": ("每季度", "Quarterly"), "yearly": ("每年", "Yearly")},
    "request_status": {"pending": ("待审批", "Pending"), "approved": ("已批准", "Approved"),
                       "refused": ("已拒绝", "Refused"), "revoked": ("已撤销", "Revoked")},
    "dispute_status": {"open": ("待处理", "Open"), "corrected": ("已更正", "Corrected"),
                       "rejected": ("已驳回", "Rejected")},
    "load_status": {"published": ("已发布", "Published"), "quarantined": ("已隔离（未通过质量检查）", "Quarantined"),
                    "failed": ("加载失败", "Failed"), "unchanged": ("无变化", "Unchanged")},
    "check": {"key_unique": ("主键唯一", "Unique key"), "required": ("必填项", "Required values"),
              "type": ("数据类型", "Data types"), "code_list": ("代码表取值", "Code list values"),
              "format": ("格式", "Formats"), "check_digit": ("校验位", "Check digits"),
              "range": ("取值范围", "Value ranges"), "reference": ("引用权威来源", "References to the authority"),
              "volume": ("数据量变化", "Row volume"), "freshness": ("数据时效", "Data freshness"),
              "custom": ("自定义检查", "Custom checks")},
    "severity": {"blocking": ("阻断", "Blocking"), "warning": ("警告", "Warning")},
}


def code(kind: str, value: str | None, lang: str = "zh") -> str:
    """The label of ``value`` of the code set ``kind`` in ``lang``; an unknown value is shown as it is."""
    if value is None:
        return "–"
    pair = CODE_LABELS.get(kind, {}).get(value)
    return value if pair is None else pair[lang != "zh"]


# Notes the metrics write in English (metrics.kpis: sharing_reason and the members' notes), as ordered
# (pattern, zh, en) rules; {cycle}/{status} groups are shown as their labels.
NOTES: tuple[tuple[str, str, str], ...] = (
    (r"not shared \((?P<x>.*)\)", "不予共享（{x}）", "Not shared ({x})"),
    (r"unconditional: readable by every department", "无条件共享：所有部门均可查询",
     "Unconditional: readable by every department"),
    (r"revoked by (?P<x>\S+): (?P<y>.*)", "已由 {x} 撤销：{y}", "Revoked by {x}: {y}"),
    (r"request (?P<x>\S+) is (?P<request>\w+) already", "申请 {x} 已是“{request}”状态", "Request {x} is {request} already"),
    (r"request (?P<x>\S+) is (?P<request>\w+); only an approved grant can be revoked",
     "申请 {x} 为“{request}”：只有已批准的授权可以撤销", "Request {x} is {request}: only an approved grant can be revoked"),
    (r"dispute (?P<x>\S+) is (?P<dispute>\w+) already", "异议 {x} 已是“{dispute}”状态", "Dispute {x} is {dispute} already"),
    (r"(?P<x>\S+) is not shared \((?P<y>.*)\); it cannot be requested", "{x} 不予共享（{y}），不能申请",
     "{x} is not shared ({y}); it cannot be requested"),
    (r"never loaded: no extract has arrived", "从未加载：尚未收到数据文件", "Never loaded: no extract has arrived"),
    (r"last load failed its quality checks \(quarantined\)", "最近一次加载未通过质量检查（已隔离）",
     "Last load failed its quality checks and was quarantined"),
    (r"last load (?P<status>\w+)", "最近一次加载：{status}", "Last load: {status}"),
    (r"overdue: last load (?P<x>.+), update cycle (?P<cycle>\w+)", "已过期：最近加载 {x}，更新周期 {cycle}",
     "Overdue: last load {x}, update cycle {cycle}"),
    (r"shared, but no other department used it while shared this period", "已共享，但本期无其他部门使用",
     "Shared, but no other department used it while shared this period"),
    (r"(?P<x>\S+) published (?P<y>.+) UTC", "{x} 于 {y}（UTC）发布", "{x} published {y} UTC"),
    (r"no published load within its update cycle \((?P<x>.*)\)", "更新周期内没有发布的加载（{x}）",
     "No published load within its update cycle ({x})"),
    (r"(?P<n>\d+) load\(s\) failed a blocking check", "{n} 次加载未通过阻断性检查",
     "{n} load(s) failed a blocking check"),
    (r"(?P<x>\S+) against (?P<y>\S+): (?P<n>\d+) disagree", "{x} 与 {y} 比对：{n} 条不一致",
     "{x} against {y}: {n} disagree"),
    (r"missed (?P<n>\d+) window\(s\) beginning (?P<x>.+)", "错过 {n} 个更新窗口，起于 {x}",
     "Missed {n} window(s) beginning {x}"),
    (r"collected in (?P<x>.+); the authority is (?P<y>.+)", "在 {x} 中采集；权威来源为 {y}",
     "Collected in {x}; the authority is {y}"),
    (r"(?P<x>\S+) for (?P<y>\S+): decided (?P<d>[\d: -]+), due by the end of (?P<z>.+)",
     "{x}（{y}）：{d} 办结，时限为 {z} 当日", "{x} for {y}: decided {d}, due by the end of {z}"),
    (r"(?P<x>\S+) for (?P<y>\S+): refused without a reason, due by the end of (?P<z>.+)",
     "{x}（{y}）：拒绝但未说明理由，时限为 {z} 当日", "{x} for {y}: refused without a reason, due by the end of {z}"),
    (r"(?P<x>\S+) for (?P<y>\S+): not decided, due by the end of (?P<z>.+)",
     "{x}（{y}）：未办结，时限为 {z} 当日", "{x} for {y}: not decided, due by the end of {z}"),
)


def note(text: str | None, lang: str = "zh") -> str:
    """A metrics note in ``lang`` (a note no rule knows is shown as written)."""
    if not text:
        return ""
    for pattern, zh, en in NOTES:
        m = re.fullmatch(pattern, text)
        if m:
            parts = m.groupdict()
            if "cycle" in parts:
                parts["cycle"] = code("cycle", parts["cycle"], lang)
            if "status" in parts:
                parts["status"] = code("load_status", parts["status"], lang)
            for group, kind in (("request", "request_status"), ("dispute", "dispute_status")):
                if group in parts:
                    parts[group] = code(kind, parts[group], lang)
            return (zh if lang == "zh" else en).format(**parts)
    return text


def kpi_label(kpi: str, lang: str = "zh") -> str:
    zh, en = KPI_LABELS.get(kpi, (kpi, kpi))
    return zh if lang == "zh" else en
