"""The template plugin's own tests run as part of ganinv's suite, the way its author runs them."""
import os
import re
import subprocess
import sys

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'examples', 'ganinv-plugin-example')


def test_example_plugin_own_tests_pass():
    """``pytest`` inside the template folder, its ``src`` on PYTHONPATH (no install needed)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.join(EXAMPLE, 'src'),
                                                                    os.environ.get('PYTHONPATH')])),
               OMP_NUM_THREADS='1', PYTHONDONTWRITEBYTECODE='1')
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider'], cwd=EXAMPLE, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    passed = re.search(r'(\d+) passed', r.stdout)
    assert passed and int(passed.group(1)) >= 6 and 'failed' not in r.stdout and 'error' not in r.stdout, r.stdout
