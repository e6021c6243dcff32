"""metrics.csv rows and the mean line from run.json's targets and each folder's metrics.json."""
import json
import math

from ganinv_core.io import summary


def test_rows_fill_from_metrics_and_tolerate_what_is_missing(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'metrics.json').write_text(json.dumps(
        {'vs_target': {'psnr': 30.0}, 'vs_clean': {'psnr': 'inf'}, 'degraded_vs_clean': {'psnr': 20.0},
         'restarts': {'chosen': 2}, 'loss': {'total': 0.5}, 'steps': 10}))
    (tmp_path / 'b').mkdir()
    (tmp_path / 'b' / 'metrics.json').write_text('{broken')
    table = summary.rows(tmp_path, {'c': {'status': 'failed', 'error': 'boom'}, 'b': {'status': 'ok', 'folder': 'b'},
                                    'a': {'status': 'ok', 'folder': 'a'}})
    assert [r['target'] for r in table] == ['a', 'b', 'c']
    a, b, c = table
    assert a['psnr_vs_target'] == 30.0 and a['psnr_after'] == 'inf' and a['restart_chosen'] == 2
    assert a['ssim_after'] is None and a['psnr_hole_after'] is None
    assert b['status'] == 'ok, metrics.json unreadable' and b['psnr_after'] is None
    assert c['error'] == 'boom' and c['loss_total'] is None
    text = summary.to_csv(table).splitlines()
    assert text[0].startswith('target,status,psnr_vs_target,') and text[0].endswith(',error')
    assert text[1].startswith('a,ok,30.0,,,20.0,inf,') and text[3].endswith(',boom')
    # identical images (PSNR inf) make an infinite mean, printed as such; only rows with metrics count
    assert summary.mean_line(table) == 'mean of 1 target(s): PSNR before 20.00 dB, after inf'   # b unreadable
    assert summary.mean_line([c]) is None
    assert math.isinf(summary._mean(table, 'psnr_after'))
    a['identity_before'], a['identity_after'] = 0.4567, 0.8912   # ArcFace scores, when the run had a network
    assert summary.mean_line(table).endswith('after inf; identity before 0.457, after 0.891')
