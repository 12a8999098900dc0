"""Opens a dinoflow report in headless Chromium (Debian's chromium + chromium-driver, through
selenium) and prints what a reader would see, as JSON, for tests/report.rs to judge: console
messages, and per section whether it is visible and its tables, images (loaded and visible) and
SVG charts. Saves a full-page screenshot.

    python tests/report_browser.py REPORT.html SCREENSHOT.png
"""

import base64
import json
import os
import pathlib
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

SECTIONS = ["dag", "metrics", "funnel", "duplicates", "retrieval", "training", "evaluation", "reproduce"]


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def section_facts(driver, section_id):
    elements = driver.find_elements(By.ID, section_id)
    if not elements:
        return {"present": False}
    section = elements[0]
    images = section.find_elements(By.TAG_NAME, "img")
    loaded = driver.execute_script(
        "return [...arguments[0].querySelectorAll('img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length", section)
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];",
                                 section)
    return {
        "present": True,
        "visible": section.is_displayed() and rect[0] > 0 and rect[1] > 0,
        "tables": len(section.find_elements(By.TAG_NAME, "table")),
        "table_rows": len(section.find_elements(By.CSS_SELECTOR, "table tr")),
        "images": len(images),
        "images_loaded": loaded,
        "images_visible": sum(1 for i in images if i.is_displayed()),
        "charts": [c.get_attribute("aria-label") for c in section.find_elements(By.CSS_SELECTOR, "svg.chart")],
        "dag_nodes": len(section.find_elements(By.CSS_SELECTOR, "svg.dag g.node")),
        "text": section.text[:20000],
    }


def main():
    report, screenshot = sys.argv[1], sys.argv[2]
    driver = browser()
    try:
        driver.get(pathlib.Path(report).resolve().as_uri())
        facts = {
            "title": driver.title,
            "console": [{"level": e["level"], "message": e["message"]} for e in driver.get_log("browser")],
            "sections": {s: section_facts(driver, s) for s in SECTIONS},
        }
        shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                      {"format": "png", "captureBeyondViewport": True})
        pathlib.Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
    finally:
        driver.quit()
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
