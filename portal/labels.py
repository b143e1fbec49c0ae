"""Page labels in Chinese and English (``?lang=zh|en``, remembered in a cookie)."""

from __future__ import annotations

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
        "catalogue": "Catalogue", "requests": "Requests & disputes", "console": "SQL console", "dashboard": "Dashboard",
        "search": "Search", "all": "all", "share_type": "Share type", "cycle": "Update cycle", "owner": "Provider",
        "element": "Data element", "freshness": "Freshness", "fresh": "within its cycle", "stale": "overdue",
        "readable": "readable", "request_access": "Request access", "purpose": "Purpose", "columns": "Columns",
        "row_scope": "Row scope (condition)", "days": "Period (days)", "submit": "Submit",
        "sensitive": "sensitive (masked)", "authority_of": "Authoritative source", "lineage": "Lineage",
        "derived": "Datasets taking elements from this one", "quality": "Last quality check", "passed": "passed",
        "failed": "failed", "consumers_list": "Consumers", "disputes": "Disputes", "flag_record": "Flag a wrong record",
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
    },
}


def kpi_label(kpi: str, lang: str = "zh") -> str:
    zh, en = KPI_LABELS.get(kpi, (kpi, kpi))
    return zh if lang == "zh" else en
