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
        "bad_login": "用户名或密码错误", "period": "考核期", "city": "全市", "target": "目标", "ranking": "部门排名（数据共享率）",
        "trends": "趋势", "department": "部门", "datasets": "数据资源", "why": "未计入共享的原因", "status": "状态",
        "consumers": "使用部门数", "last_load": "最近加载", "duplicates": "重复采集矩阵", "export": "导出",
        "quality_timeliness": "质量与及时性", "shared": "已共享", "not_counted": "未计入", "authority": "权威来源",
        "collects": "重复采集的数据元", "should_consume": "应引用的权威数据集", "back": "返回总览",
        "empty": "尚未发布任何考核指标：运行 onesource_metrics DAG 或 onesource metrics --publish。",
        "matrix_note": "绿色：部门是该数据元的权威来源；红色：部门重复采集了其他部门负责的数据元。",
        "behind": "未达标", "on_target": "已达标", "no_data": "无数据", "of": "/", "language": "English",
        "simulated": "演示数据：本月之前的月份为模拟历史。",
    },
    "en": {
        "title": "OneSource sharing KPIs", "sign_in": "Sign in", "sign_out": "Sign out", "user": "User",
        "password": "Password", "bad_login": "Wrong user or password", "period": "Period", "city": "City",
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
    },
}


def kpi_label(kpi: str, lang: str = "zh") -> str:
    zh, en = KPI_LABELS.get(kpi, (kpi, kpi))
    return zh if lang == "zh" else en
