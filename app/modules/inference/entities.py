"""Predict by entity: a model version's inputs built by the features module.

A version trained from a feature service records it (``lineage.feature_service`` as
``name:N``) with the transform state it was fitted with (``lineage.transform_state``); its
single input takes the float32 feature matrix those produce for the requested entities.
"""

from __future__ import annotations

from app.kernel.module import unbound
from app.modules.inference.runtime import LoadedModel
from contracts.common import Tensor, UnprocessableInput
from contracts.features import FeaturesService, GetOnlineVectors
from contracts.inference import Predict

__all__ = ["entity_inputs"]


async def entity_inputs(
    features: FeaturesService | None, model: LoadedModel, request: Predict
) -> dict[str, Tensor]:
    """The model inputs for ``request.entities`` (with ``request.features`` overriding)."""
    if features is None:
        raise unbound("predicting by entity", "QUARRY_REMOTE_FEATURES")
    label = f"{model.name}:{model.version}"
    if request.inputs:
        raise UnprocessableInput(
            "give either inputs or entities, not both (explicit feature values go in 'features')"
        )
    service = model.lineage.feature_service
    if not service:
        raise UnprocessableInput(
            f"{label} was not trained from a feature service: send its inputs, not entities",
            details={"model": label},
        )
    if len(model.signature.inputs) != 1:
        raise UnprocessableInput(
            f"{label} has {len(model.signature.inputs)} inputs; predicting by entity needs a"
            " model with one input taking the feature vector",
            details={"model": label},
        )
    name, _, version = service.partition(":")
    vectors = await features.get_online_vectors(
        GetOnlineVectors(
            service=name,
            version=int(version) if version.isdigit() else None,
            state=model.lineage.transform_state,
            entities=request.entities,
            overrides=request.features,
        )
    )
    return {model.signature.inputs[0].name: vectors.values}
