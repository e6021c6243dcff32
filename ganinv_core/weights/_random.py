"""Built-in random generators `random-<res>`: seeded weights, identical on every machine (CPU RNG)."""
import torch

_SMALL = dict(z_dim=128, w_dim=128, mapping_kwargs=dict(num_layers=4),
              synthesis_kwargs=dict(channel_base=4096, channel_max=128, num_fp16_res=0, conv_clamp=None))
# Config-f channel counts, with the fp16 / clamp settings NVIDIA's ADA ffhq.pkl carries.
_CONFIG_F = dict(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=8),
                 synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256))
RANDOM_NETWORKS = {'random-32': (32, _SMALL), 'random-64': (64, _SMALL),
                   'random-256': (256, _CONFIG_F), 'random-1024': (1024, _CONFIG_F)}
SEED = 2020


def random_generator(name):
    """Build `name` (a key of RANDOM_NETWORKS) with NVIDIA's initialisation drawn from a fixed seed.

    `mapping.w_avg` is set to the mean w of 1000 seeded z, so truncation and w_avg initialisation work.

    Returns:
        Generator (train mode, on the CPU).
    """
    from ..nets import Generator
    res, cfg = RANDOM_NETWORKS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + res)
        G = Generator(c_dim=0, img_resolution=res, img_channels=3, **cfg)
        z = torch.randn([1000, G.z_dim])
        with torch.no_grad():
            G.mapping.w_avg.copy_(G.mapping(z, None, skip_w_avg_update=True)[:, 0].mean(0))
    return G
