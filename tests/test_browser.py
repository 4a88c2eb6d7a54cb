"""The pack as a user sees it: headless Chromium against the real ComfyUI server and frontend.

Every template loads with every node type known and no node covering another; the node
search finds SamplerEVODiff; its help panel shows the page (served at docs/<node>/en.md, no 404);
a bad value queued over HTTP gets one error, on the input that is wrong. Screenshots go to the
test's tmp dir and to bench_out/browser/comfyui-<version>/ (both printed with -s).

Skips, with the reason, where Chromium, chromedriver, selenium or the frontend that this ComfyUI
pins are not installed (.ci/run installs them; scripts/prepare-comfyui the frontend of another
ComfyUI tree). Every request goes to 127.0.0.1; each wait is bounded.
"""
import json
import re
import shutil
import time
import urllib.parse
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

import comfy_harness as h
from comfy_server import PACK_NAME, get_json, post_json, running_server
from tools.comfyui_runtime import PACK_DIR, comfyui_version

pytestmark = [pytest.mark.comfy, pytest.mark.slow]
WINDOW = (1600, 1000)
UI_TIMEOUT_S, STEP_TIMEOUT_S = 60, 15
TEMPLATE_NAMES = sorted(p.stem for p in (PACK_DIR / "example_workflows").glob("*.json"))
# No first-run template dialog; no "models missing" notice (the templates' checkpoints are not here).
USER_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False}
EVIDENCE_DIR = PACK_DIR / "bench_out" / "browser"  # ignored by git: for a person to look at


def _browser_binaries():
    """(chromium, chromedriver) paths, or skip saying what is missing."""
    pytest.importorskip("selenium", reason="selenium is not installed (pyproject's dev extra)")
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no headless browser: `apt-get install chromium chromium-driver` (.ci/run does it)")
    return chromium, driver


def _frontend_args(comfy_dir: Path) -> list[str]:
    """--front-end-root for the frontend this ComfyUI pins, or [] when the venv has that one."""
    pin = re.search(r"^comfyui-frontend-package==(\S+)", (comfy_dir / "requirements.txt").read_text(), re.M)
    beside = comfy_dir / ".evodiff-frontend" / "comfyui_frontend_package" / "static"
    if beside.is_dir():
        return ["--front-end-root", str(beside)]
    try:
        installed = version("comfyui-frontend-package")
    except PackageNotFoundError:
        installed = None
    if pin and installed != pin.group(1):
        pytest.skip(f"this ComfyUI pins comfyui-frontend-package {pin.group(1)}, the venv has {installed}: "
                    f"run scripts/prepare-comfyui for that tree")
    return []


@pytest.fixture(scope="module")
def screenshots(comfyui, tmp_path_factory):
    directory = tmp_path_factory.mktemp("browser")
    evidence = EVIDENCE_DIR / f"comfyui-{comfyui_version()}"
    print(f"\n[browser] screenshots: {directory} (copied to {evidence})")
    yield directory
    shutil.rmtree(evidence, ignore_errors=True)
    shutil.copytree(directory, evidence)


@pytest.fixture(scope="module")
def server(comfyui, tmp_path_factory):
    _browser_binaries()
    with running_server(comfyui.comfy_dir, tmp_path_factory.mktemp("server"),
                        *_frontend_args(comfyui.comfy_dir), test_nodes=False) as url:
        yield url


@pytest.fixture(scope="module")
def browser(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--no-sandbox",
                "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):  # nothing leaves the loopback
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for setting, value in USER_SETTINGS.items():  # stored by the server, read by the frontend at start
        post_json(f"{server}/settings/{setting}", value)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(UI_TIMEOUT_S)
    driver.set_script_timeout(STEP_TIMEOUT_S)
    try:
        driver.get(server)
        wait_for(driver, "return !!(window.app && window.app.graph && window.LiteGraph)", UI_TIMEOUT_S)
        time.sleep(1)  # let the sidebar and the extensions settle
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script, timeout=STEP_TIMEOUT_S, *args):
    """Poll a JS expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for: {script}")


def close_dialogs(driver):
    """Close open dialogs and toasts with their (x) buttons, as a user would."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ActionChains(driver).send_keys(Keys.ESCAPE).perform()  # the node search box
    driver.execute_script("""
        const buttons = [...document.querySelectorAll('[role=dialog] button, .p-toast button')];
        buttons.filter(b => b.offsetParent && b.querySelector('.pi-times')).forEach(b => b.click());""")
    time.sleep(0.5)


def run_command(driver, command_id):
    driver.execute_script("return window.app.extensionManager.command.execute(arguments[0])", command_id)


def console_errors(driver, pattern):
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE" and pattern in e["message"]]


# Each drawn node box (title bar included, and a custom node's pack badge above it), and the
# pairs that overlap; tests/test_pack_metadata.py checks the same on the stored layout.
_OVERLAPS_JS = """
const nodes = window.app.graph._nodes;
const badge = n => (n.constructor.nodeData?.python_module || '').startsWith('custom_nodes') ? 20 : 0;
const box = n => { const b = n.getBounding(); return [b[0], b[1] - badge(n), b[0] + b[2], b[1] + b[3]]; };
const pairs = [];
for (let i = 0; i < nodes.length; i++) for (let j = i + 1; j < nodes.length; j++) {
  const [a, b] = [box(nodes[i]), box(nodes[j])];
  if (a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]) pairs.push(nodes[i].type + ' / ' + nodes[j].type);
}
return pairs;
"""


def shown_template_titles(driver) -> list[str]:
    """The pack's template titles in the order the open template browser shows them."""
    return driver.execute_script("""
        const names = new Set(arguments[0]), seen = [];
        for (const e of document.querySelectorAll('[role=dialog] *'))
            if (e.children.length === 0 && names.has(e.textContent.trim()) && !seen.includes(e.textContent.trim()))
                seen.push(e.textContent.trim());
        return seen;""", TEMPLATE_NAMES)


def open_pack_templates(driver):
    run_command(driver, "Comfy.BrowseTemplates")
    wait_for(driver, "return document.body.innerText.includes(arguments[0])", STEP_TIMEOUT_S, PACK_NAME)
    driver.execute_script("""  // the pack's own category, as a user would pick it
        const item = [...document.querySelectorAll('[role=dialog] *')].find(e => e.children.length === 0
            && e.textContent.trim() === arguments[0] && e.offsetParent);
        item.click();""", PACK_NAME)
    time.sleep(1.5)


def test_template_cards_are_titled_by_name_in_readme_order_from_a_to_z(server, browser, screenshots):
    assert sorted(get_json(server + "/workflow_templates")[PACK_NAME]) == TEMPLATE_NAMES
    close_dialogs(browser)
    open_pack_templates(browser)
    browser.save_screenshot(str(screenshots / "1-template-cards default order.png"))
    default_order = shown_template_titles(browser)
    print("\n[browser] template cards, default sort:", default_order)   # the server's folder order
    assert sorted(default_order) == TEMPLATE_NAMES
    close_dialogs(browser)
    browser.execute_script("return window.app.extensionManager.setting.set('Comfy.Templates.SortBy', 'alphabetical')")
    open_pack_templates(browser)
    browser.save_screenshot(str(screenshots / "1-template-cards A-Z.png"))
    assert shown_template_titles(browser) == TEMPLATE_NAMES   # the README's order
    close_dialogs(browser)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_template_loads_with_every_node_known_and_none_covered(server, browser, screenshots, name):
    close_dialogs(browser)
    path = f"/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(name)}.json"
    workflow = get_json(server + path)   # the URL the template browser loads it from
    browser.execute_script("return window.app.loadGraphData(arguments[0])", workflow)
    wait_for(browser, "return window.app.graph._nodes.length === arguments[0]", STEP_TIMEOUT_S, len(workflow["nodes"]))
    run_command(browser, "Comfy.Canvas.FitView")
    time.sleep(1)
    browser.save_screenshot(str(screenshots / f"2-template {name}.png"))
    unknown = browser.execute_script(
        "return window.app.graph._nodes.map(n => n.type).filter(t => !LiteGraph.registered_node_types[t])")
    assert unknown == []
    assert browser.execute_script(_OVERLAPS_JS) == []
    assert "Invalid workflow" not in browser.execute_script("return document.body.innerText")


def test_node_search_finds_the_node(server, browser, screenshots):
    info = get_json(server + f"/object_info/{h.SAMPLER_NODE}")[h.SAMPLER_NODE]
    (screenshots / "3-object_info.json").write_text(json.dumps(info, indent=2))  # the tooltips, as served
    aliases = info.get("search_aliases")
    close_dialogs(browser)
    browser.execute_script("window.app.graph.clear()")
    for query in ["evodiff", *(["low steps"] if aliases else [])]:  # aliases: ComfyUI 0.33+
        run_command(browser, "Workspace.SearchBox.Toggle")
        field = wait_for(browser, "const e = document.activeElement; return e && e.tagName === 'INPUT' && e")
        field.send_keys(query)
        wait_for(browser, """return [...document.querySelectorAll('[role=listbox]')].some(
            list => list.innerText.includes(arguments[0]))""", STEP_TIMEOUT_S, h.SAMPLER_NODE)
        time.sleep(0.5)
        browser.save_screenshot(str(screenshots / f"3-node-search {query}.png"))
        close_dialogs(browser)


def test_help_panel_shows_the_page_from_its_localised_path(server, browser, screenshots):
    close_dialogs(browser)
    browser.get_log("browser")  # drop what came before
    browser.execute_script("performance.clearResourceTimings()")
    browser.execute_script("""
        window.app.graph.clear();
        const node = LiteGraph.createNode(arguments[0]);
        node.pos = [200, 200];
        window.app.graph.add(node);
        window.app.canvas.selectNode(node);
        window.app.canvas.setDirty(true, true);""", h.SAMPLER_NODE)
    info = wait_for(browser, "return document.querySelector('[data-testid=info-button]')")
    browser.execute_script("arguments[0].click()", info)
    wait_for(browser, "return document.body.innerText.includes('from second order to the plain Euler')")
    time.sleep(0.5)
    browser.save_screenshot(str(screenshots / "4-help-panel.png"))
    assert console_errors(browser, f"/docs/{h.SAMPLER_NODE}") == []   # no 404 for en.md
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('/docs/'))")
    assert any(url.endswith(f"/docs/{h.SAMPLER_NODE}/en.md") for url in fetched), fetched
    page = (PACK_DIR / "web" / "docs" / h.SAMPLER_NODE / "en.md").read_text()
    with_prefix = f"{server}/extensions/{PACK_NAME}/docs/{h.SAMPLER_NODE}"
    import urllib.request
    for url in (f"{with_prefix}/en.md", f"{with_prefix}.md"):
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read().decode() == page, url


def test_bad_value_gets_one_error_on_the_right_input(server, browser, screenshots):
    # only core nodes: PreviewAny makes SamplerEVODiff an output's input, so ComfyUI validates it
    prompt = {"evodiff": {"class_type": h.SAMPLER_NODE,
                          "inputs": {"shift": 0.5, "variant": "bogus", "noise_schedule": "auto"}},
              "show": {"class_type": "PreviewAny", "inputs": {"source": ["evodiff", 0]}}}
    status, answer = post_json(server + "/prompt", {"prompt": prompt, "client_id": "evodiff-browser-test"})
    (screenshots / "5-bad-value-response.json").write_text(json.dumps(answer, indent=2))
    print("\n[browser] POST /prompt with variant 'bogus':", status, json.dumps(answer["node_errors"]))
    assert status == 400
    assert set(answer["node_errors"]) == {"evodiff"}
    [error] = answer["node_errors"]["evodiff"]["errors"]
    assert error["extra_info"]["input_name"] == "variant" and "bogus" in error["details"]

    # the same prompt queued from the UI: the error the user sees
    close_dialogs(browser)
    browser.execute_script("window.app.graph.clear(); return window.app.loadApiJson(arguments[0], 'bad value')", prompt)
    wait_for(browser, "return window.app.graph._nodes.length > 0")
    run_command(browser, "Comfy.Canvas.FitView")
    browser.execute_script("return window.app.queuePrompt(0, 1)")
    wait_for(browser, "return document.body.innerText.includes('bogus')")
    time.sleep(1)
    browser.save_screenshot(str(screenshots / "5-bad-value-in-the-ui.png"))
    close_dialogs(browser)
    browser.save_screenshot(str(screenshots / "5-bad-value-on-the-node.png"))
