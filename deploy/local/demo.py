"""Demo traffic: what the appeal platform would publish, in all three channels."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.channels import SubmittedRequest
from shared.events import CloudEvent, EventType, encode, utcnow

HOTLINE = [
    (
        "小区垃圾好几天没人清运",
        "朝阳路12号院3号楼下垃圾桶满了好几天没人清运，味道很大，苍蝇很多。",
        "朝阳路12号院",
    ),
    (
        "工地夜间施工噪音扰民",
        "晚上十一点多了，隔壁工地还在打桩，噪音特别大，孩子没法睡觉。",
        "光华路与东三环交叉口东北角工地",
    ),
    (
        "家里停水一整天",
        "我们楼从早上开始停水，没有任何通知，老人在家做饭都没水。",
        "团结湖北里5号楼",
    ),
    (
        "公司拖欠三个月工资",
        "我在一家装修公司干活，老板已经拖欠三个月工资不给，电话也不接。",
        "建国路88号",
    ),
    ("路口红绿灯坏了", "十字路口的红绿灯不亮了，车辆乱成一团，很危险。", "金台路与朝阳北路路口"),
]
APP = [
    ("小区门口有人占道经营摆摊卖水果，人行道都走不了", "望京西园三区南门", 39.996, 116.47),
    ("河道里有人排污水，水面发黑发臭", "亮马河燕莎桥段", 39.951, 116.462),
    ("烧烤店油烟太大，整栋楼都是烟味", "三里屯路19号", 39.935, 116.455),
    ("暖气不热，屋里只有十四度", "芍药居北里201号楼", 39.983, 116.43),
]
GRID = [
    ("sanitation.litter", "背街小巷堆放建筑垃圾", "G-CY-0012"),
    ("cityscape.ads_stalls", "电线杆上贴满小广告", "G-CY-0031"),
    ("construction.site", "工地未覆盖防尘网，扬尘严重", "G-CY-0047"),
]


def demo_payloads(seed: int = 7) -> Iterator[dict[str, Any]]:
    """An endless, varied stream of channel payloads (fresh source_ref each)."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    for n in itertools.count(1):
        channel = rng.choice(["hotline", "hotline", "app", "app", "grid"])
        ref = f"{channel[0].upper()}{n:06d}-{uuid.uuid4().hex[:6]}"
        if channel == "hotline":
            summary, details, address = rng.choice(HOTLINE)
            yield {
                "channel": "hotline",
                "source_ref": ref,
                "operator_id": f"op{rng.randint(1, 40):03d}",
                "caller_phone": f"13{rng.randint(100000000, 999999999)}",
                "caller_name": rng.choice(["张先生", "李女士", "王阿姨", None]),
                "anonymous": False,
                "confidential": rng.random() < 0.1,
                "address_text": address,
                "summary": summary,
                "details": details,
            }
        elif channel == "app":
            text, address, lat, long = rng.choice(APP)
            yield {
                "channel": "app",
                "source_ref": ref,
                "text": text,
                "address_text": address,
                "lat": lat,
                "long": long,
                "photo_urls": [f"https://img.demo-district.example/{uuid.uuid4().hex}.jpg"],
                "reporter_phone": f"+86 139{rng.randint(10000000, 99999999)}",
            }
        else:
            code, text, grid = rng.choice(GRID)
            yield {
                "channel": "grid",
                "source_ref": ref,
                "grid_worker_id": f"W{rng.randint(100, 999)}",
                "grid_id": grid,
                "checklist_code": code,
                "text": text,
            }


def submitted_event(payload: dict[str, Any]) -> tuple[str, CloudEvent]:
    """The platform's CloudEvent for one payload, and its Kafka key (channel:source_ref)."""
    SubmittedRequest.model_validate(payload)  # demo data must itself be valid
    event = CloudEvent(
        specversion="1.0",
        id=str(uuid.uuid4()),
        source="/appeal-platform/demo",
        type=EventType.REQUEST_SUBMITTED.value,
        time=utcnow(),
        datacontenttype="application/json",
        data=payload,
    )
    return f"{payload['channel']}:{payload['source_ref']}", event


async def publish(producer: AIOKafkaProducer, topic: str, payload: dict[str, Any]) -> str:
    key, event = submitted_event(payload)
    await producer.send_and_wait(topic, encode(event), key=key.encode())
    return key
