"""A site's budget with SG-CycleGAN rounds under DP (client.privacy): the GAN's planned steps spend
their share of the target, the classifiers' noise is derived on top of what the GAN spent, and
a GAN round that would exceed the budget is declined before anything is trained."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from client.privacy import BudgetExhausted, evaluation_release, private_gan_round
from ecs_models.training.dp_sgd import PrivacyAccount
from protocol.messages import LocalDp

SETTING = LocalDp(target_epsilon=4.0, delta=1e-3, clipping_norm=1.0, noise_multiplier=0.0, planned_rounds=2,
                  gan_steps=6, gan_budget_share=0.3)
PATIENTS = [f"p{i}" for i in range(20)]
DATASET = torch.utils.data.TensorDataset(torch.zeros(20, 1, 4, 4), torch.arange(20) % 2 == 1)


def test_the_gan_spends_its_share_and_the_classifiers_noise_fills_the_rest() -> None:
    account = PrivacyAccount("rdp", SETTING.delta, SETTING.clipping_norm)
    for _ in range(2):  # the planned 6 steps: two rounds of 3
        loader, q, z = private_gan_round(account, SETTING, DATASET, PATIENTS, batch_size=4, steps=3,
                                         generator=torch.Generator().manual_seed(0))
        assert len(list(loader)) == 3 and q == 0.2
        account.add(z, q, 3)
    assert account.gan_noise_multiplier == z
    assert 0.3 * 4.0 - 0.011 <= account.epsilon() <= 0.3 * 4.0  # its share, to Opacus's 0.01
    releases = evaluation_release(account, SETTING, SETTING.planned_rounds + 1)
    z_classifier = account.derive_noise(SETTING.target_epsilon, 0.25, 10, reserved=releases)
    assert z_classifier != z
    assert 4.0 - 0.011 <= account.epsilon((z_classifier, 0.25, 10), releases) <= 4.0  # GAN + classifiers + releases


def test_a_gan_round_over_the_budget_is_declined_before_training() -> None:
    account = PrivacyAccount("rdp", SETTING.delta, SETTING.clipping_norm)
    noisy_enough_for_nothing = replace(SETTING, noise_multiplier=0.3)  # a fixed z applies to the GAN too
    with pytest.raises(BudgetExhausted, match="SG-CycleGAN") as declined:
        private_gan_round(account, noisy_enough_for_nothing, DATASET, PATIENTS, batch_size=4, steps=3,
                          generator=torch.Generator().manual_seed(0))
    assert declined.value.report.declined and account.accountant.history == []
