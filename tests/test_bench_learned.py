"""The shipped learned denoiser and feature net (bench/weights)."""
import pytest
import torch

from bench import learned


def test_weights_are_small_and_load():
    assert learned.DENOISER_FILE.stat().st_size + learned.FEATURES_FILE.stat().st_size < 5e6
    denoiser, feature_net = learned.load()
    data, labels = learned.digits_data()
    assert (feature_net(data).argmax(1) == labels).float().mean() > 0.95


def test_denoiser_limits_and_quality():
    denoiser, _ = learned.load()
    data, _ = learned.digits_data(torch.float64)
    gen = torch.Generator().manual_seed(0)
    x0 = data[:256]
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        # almost no noise: the identity; pure noise (flow t = 1): close to the data mean
        assert (denoiser.denoise_ve(x0 + 1e-3 * noise, torch.full((256,), 1e-3)) - x0).abs().max() < 0.02
        at_noise = denoiser.denoise_flow(noise, torch.ones(256, dtype=torch.float64))
        assert (at_noise - data.mean(0)).pow(2).mean().sqrt() < 0.1
        # a real denoiser at sigma = 0.5: far better than returning the noisy input or the mean
        sigma = torch.full((256,), 0.5, dtype=torch.float64)
        err = (denoiser.denoise_ve(x0 + 0.5 * noise, sigma) - x0).pow(2).mean().sqrt()
        assert err < 0.5 * min(0.5, (x0 - data.mean(0)).pow(2).mean().sqrt())


# --- the class-conditional denoiser and classifier-free guidance ---------------------------

def _karras(n=50, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """ComfyUI's karras list (n sigmas, then 0), float64."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _euler(denoise, noise, sigmas):
    """The probability-flow ODE in VE form, dx/dsigma = (x - D(x, sigma)) / sigma, by Euler."""
    x = noise * sigmas[0]
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (sigma_next - sigma) * (x - denoise(x, sigma.expand(x.shape[0]))) / sigma
    return x


def _inputs(batch=12, dtype=torch.float64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x0 = learned.digits_data(dtype)[0][:batch]
    sigma = torch.logspace(-2, 1, batch, dtype=dtype)            # a different noise level per row
    noise = torch.randn(x0.shape, generator=gen, dtype=dtype)
    labels = torch.randint(learned.CLASSES, (batch,), generator=gen)
    return x0 + sigma.reshape(-1, 1, 1, 1) * noise, sigma, labels


def test_conditional_weights_are_small_and_load():
    assert learned.CONDITIONAL_FILE.stat().st_size < 1.5e6
    net = learned.load_conditional()
    assert net is learned.load_conditional()
    assert net.classes == learned.CLASSES and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    # the unconditional net is untouched and refuses labels
    with pytest.raises(ValueError):
        learned.load()[0].denoise_ve(*_inputs()[:2], torch.zeros(12, dtype=torch.long))


def test_conditional_denoiser_knows_its_classes():
    """At pure noise (flow t = 1, finite there) D_c is the class mean and D_u the data mean."""
    net = learned.load_conditional()
    data, labels = learned.digits_data(torch.float64)
    noise = torch.randn((10, *learned.EVENT_SHAPE), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.ones(10, dtype=torch.float64)
    class_means = torch.stack([data[labels == c].mean(0) for c in range(10)])
    d_c = net.denoise_flow(noise, t, torch.arange(10))
    d_u = net.denoise_flow(noise, t, torch.full((10,), learned.NULL_LABEL))
    assert torch.isfinite(d_c).all()
    assert (d_c - class_means).pow(2).mean().sqrt() < 0.1
    assert (d_u - data.mean(0)).pow(2).mean().sqrt() < 0.1
    # class means are far apart (about 0.5 RMS), so this is not met by one blurred mean
    assert (class_means - data.mean(0)).pow(2).mean().sqrt() > 0.3
    assert torch.equal(net.denoise_flow(noise, t), d_u)           # no labels: the null label


@pytest.mark.parametrize("family", ["eps", "flow"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_guidance_at_cfg_1_and_0_is_cond_and_uncond(family, dtype):
    net = learned.load_conditional()
    x, sigma, labels = _inputs(dtype=dtype)
    if family == "flow":
        sigma = sigma / (1 + sigma)                                 # t in (0, 1)
    denoise = net.denoise_flow if family == "flow" else net.denoise_ve
    cond = denoise(x, sigma, labels)
    uncond = denoise(x, sigma, torch.full_like(labels, learned.NULL_LABEL))
    at_1 = learned.guided_denoiser(family, labels, 1.0)(x, sigma)
    at_0 = learned.guided_denoiser(family, labels, 0.0)(x, sigma)
    at_3 = learned.guided_denoiser(family, labels, 3.0)(x, sigma)
    assert at_1.dtype == at_0.dtype == dtype
    assert torch.equal(at_1, cond)
    # the net is float32 inside and BLAS rounds by batch size; the flow form divides the net's
    # output by 1 − t (up to 11× here), which scales that rounding (seen: 2.5e-5 at t = 0.91)
    scale = (1 - sigma if family == "flow" else torch.ones_like(sigma)).reshape(-1, 1, 1, 1)
    assert ((at_0 - uncond).abs() * scale).max() <= 1e-5
    assert ((at_3 - (uncond + 3 * (cond - uncond))).abs() * scale).max() <= 1e-5
    assert (cond - uncond).abs().max() > 0.05                     # the label changes the output


def test_guided_batch_rows_are_independent():
    x, sigma, labels = _inputs()
    full = learned.guided_denoiser("eps", labels, 3.0)(x, sigma)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))
    permuted = learned.guided_denoiser("eps", labels[order], 3.0)(x[order], sigma[order])
    torch.testing.assert_close(permuted, full[order], rtol=0, atol=1e-5)
    one = learned.guided_denoiser("eps", labels[5:6], 3.0)(x[5:6], sigma[5:6])
    torch.testing.assert_close(one, full[5:6], rtol=0, atol=1e-5)
    other = labels.clone()
    other[:5] = (other[:5] + 1) % learned.CLASSES                  # other rows' labels change
    changed = learned.guided_denoiser("eps", other, 3.0)(x, sigma)
    torch.testing.assert_close(changed[5:], full[5:], rtol=0, atol=1e-5)
    assert (changed[:5] - full[:5]).abs().amax((1, 2, 3)).min() > 1e-3
    with pytest.raises(ValueError):
        learned.guided_denoiser("eps", labels, 3.0)(x[:4], sigma[:4])


def test_guided_samples_are_the_requested_digits():
    """Euler (50 karras steps, 80 -> 0.002): at cfg 3 the feature net's head reads the requested
    digit, more surely than at cfg 1; the null label's samples ignore the request (about chance)
    yet are clear digits."""
    _, feature_net = learned.load()
    labels = torch.arange(learned.CLASSES).repeat(30)
    noise = torch.randn((len(labels), *learned.EVENT_SHAPE), dtype=torch.float64,
                        generator=torch.Generator().manual_seed(0))

    def classify(denoise):
        samples = _euler(denoise, noise, _karras())
        probs = feature_net(samples.to(torch.float32)).softmax(1)
        hits = (probs.argmax(1) == labels).float().mean().item()
        return hits, probs[torch.arange(len(labels)), labels].mean().item(), probs.max(1).values.mean().item()

    with torch.no_grad():
        data_confidence = feature_net(learned.digits_data()[0]).softmax(1).max(1).values.mean().item()
        guided, guided_p, _ = classify(learned.guided_denoiser("eps", labels, 3.0))
        plain, plain_p, _ = classify(learned.guided_denoiser("eps", labels, 1.0))
        null, _, null_confidence = classify(learned.load_conditional().denoise_ve)   # no labels: D_u
    assert guided >= 0.9 and guided >= plain
    assert guided_p > plain_p                                      # guidance sharpens the class
    assert guided - null > 0.6                                     # null: about chance (0.1)
    assert null < 0.3
    assert null_confidence > 0.9 * data_confidence
